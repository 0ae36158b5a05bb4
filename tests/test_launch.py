"""tools/train.py and tools/test.py read --launcher as the upstream scripts'
argparse does: `--launcher X` and `--launcher=X`."""
import pytest

from mmspm.launch import launcher_of, run_upstream


@pytest.mark.parametrize('argv', [
    ['c.py', '--launcher', 'pytorch'],
    ['c.py', '--launcher=pytorch', '--resume'],
])
def test_both_forms(argv):
    assert launcher_of(argv) == 'pytorch'


def test_no_launcher_is_none():
    assert launcher_of(['c.py', '--work-dir', 'w']) == 'none'


@pytest.mark.parametrize('argv', [['--launcher'], ['--launcher', '--resume']])
def test_a_launcher_without_value_is_named(argv, tmp_path):
    config = tmp_path / 'c.py'
    config.write_text("default_scope = 'mmpretrain'\n")
    with pytest.raises(SystemExit, match='--launcher needs a value: none, pytorch'):
        run_upstream('test', [str(config), 'ckpt.pth', *argv])
