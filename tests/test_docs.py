"""The documents that the code's messages and the Markdown files name exist,
with the headings they name: a user sent to a section finds it."""
import glob
import os.path as osp
import re

import pytest

from tests.utils import ROOT

# In messages: `docs/x.md`, `README.md, section "Heading"` (or plain
# `README, section ...`), `docs/x.md#anchor`.
CODE_REF = re.compile(r'((?:docs/)?[\w-]+\.md|README)(?:#([\w-]+)|, section "([^"]+)")?')
# In Markdown: [text](path.md#anchor) or [text](#anchor).
LINK = re.compile(r'\]\(([^)\s]*?\.md)?(?:#([\w-]+))?\)')


def headings(path: str) -> list[str]:
    found, fenced = [], False
    with open(path) as f:
        for line in f:
            fenced ^= line.startswith('```')
            if not fenced and re.match(r'#{1,6} ', line):
                found.append(line.lstrip('#').strip())
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')


def code_refs() -> list[tuple[str, str, str]]:
    refs = []
    for path in glob.glob(osp.join(ROOT, 'mmspm', '**', '*.py'), recursive=True) + \
            glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True):
        for match in CODE_REF.finditer(open(path).read()):
            name, hash_anchor, section = match.groups()
            refs.append((osp.relpath(path, ROOT), 'README.md' if name == 'README' else name,
                         hash_anchor, section))
    return refs


def markdown_links() -> list[tuple[str, str, str]]:
    links = []
    files = ['README.md', 'CONTRIBUTING.md'] + [
        osp.relpath(p, ROOT) for pattern in ('docs/*.md', 'configs/**/README.md')
        for p in glob.glob(osp.join(ROOT, pattern), recursive=True)]
    for name in files:
        for target, section in LINK.findall(open(osp.join(ROOT, name)).read()):
            if target.startswith(('http://', 'https://')):
                continue
            path = osp.normpath(osp.join(osp.dirname(name), target)) if target else name
            links.append((name, path, section))
    return links


def test_code_names_existing_documents_and_sections():
    refs = code_refs()
    assert any(section for *_, section in refs), 'no section reference found: pattern broken'
    for source, path, hash_anchor, section in refs:
        if not osp.isfile(osp.join(ROOT, path)):
            if path.startswith('docs/') or path in ('README.md', 'CONTRIBUTING.md'):
                pytest.fail(f'{source} names {path}, which does not exist')
            continue  # another codebase's file (e.g. mmdet's README.md)
        if section:
            assert section in headings(osp.join(ROOT, path)), (source, path, section)
        if hash_anchor:
            assert hash_anchor in map(anchor, headings(osp.join(ROOT, path))), (source, path)


def test_markdown_links_reach_their_files_and_headings():
    links = markdown_links()
    assert len(links) > 20
    for source, path, section in links:
        assert osp.exists(osp.join(ROOT, path)), (source, path)
        if section:
            assert section in map(anchor, headings(osp.join(ROOT, path))), (source, path, section)
