"""tools/train.py and tools/test.py read --launcher as the upstream scripts'
argparse does: `--launcher X` and `--launcher=X`; a config scope mmengine
cannot find is named with the fix."""
import pytest

from mmspm.launch import launcher_of, load_config, run_upstream


@pytest.mark.parametrize('argv', [
    ['c.py', '--launcher', 'pytorch'],
    ['c.py', '--launcher=pytorch', '--resume'],
])
def test_both_forms(argv):
    assert launcher_of(argv) == 'pytorch'


def test_no_launcher_is_none():
    assert launcher_of(['c.py', '--work-dir', 'w']) == 'none'


@pytest.mark.parametrize('argv', [['--launcher'], ['--launcher', '--resume']])
def test_a_launcher_without_value_is_named(argv, tmp_path, loading_restored):
    config = tmp_path / 'c.py'
    config.write_text("default_scope = 'mmpretrain'\n")
    with pytest.raises(SystemExit, match='--launcher needs a value: none, pytorch'):
        run_upstream('test', [str(config), 'ckpt.pth', *argv])


def test_a_scope_under_another_distribution_name_is_named_with_the_link(tmp_path, monkeypatch):
    """mmengine finds `mmseg::` bases through the distribution its table
    names (mmsegmentation); where mmseg comes from another distribution (the
    OneDL fork's), the tools say which link makes mmengine find it."""
    from mmengine.config.utils import MODULE2PACKAGE
    config = tmp_path / 'fpn.py'
    config.write_text("_base_ = ['mmseg::_base_/models/fpn_r50.py']\n")
    monkeypatch.setitem(MODULE2PACKAGE, 'mmseg', 'mmsegmentation_elsewhere')
    with pytest.raises(SystemExit, match=r"inherits from mmseg::.*distribution "
                                         r"'mmsegmentation_elsewhere'.*ln -s mmseg .*"
                                         r"site-packages/mmsegmentation_elsewhere"):
        load_config(str(config))
