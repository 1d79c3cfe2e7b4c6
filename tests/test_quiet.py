"""quiet_libraries: library progress bars off during a run, download progress kept, all restored after."""

from flux_core.quiet import quiet_libraries


def test_quiet_libraries_keeps_huggingface_hub_download_bars_and_restores_every_setting():
    import datasets
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    before = (
        datasets.is_progress_bar_enabled(),
        hf_logging.is_progress_bar_enabled(),
        hub_utils.are_progress_bars_disabled(),
        hf_logging.get_verbosity(),
    )
    assert not before[2], "huggingface_hub's bars start enabled (HF_HUB_DISABLE_PROGRESS_BARS unset)"
    with quiet_libraries():
        assert not datasets.is_progress_bar_enabled()  # dataset.map bars: off
        assert not hf_logging.is_progress_bar_enabled()  # transformers' loading bars: off
        assert not hub_utils.are_progress_bars_disabled()  # downloads from the hub: still shown
        assert hf_logging.get_verbosity() == hf_logging.ERROR
    after = (
        datasets.is_progress_bar_enabled(),
        hf_logging.is_progress_bar_enabled(),
        hub_utils.are_progress_bars_disabled(),
        hf_logging.get_verbosity(),
    )
    assert after == before
