"""vtl-train against issue 32's findings: an empty `engine/latest` (1), a full disk reported by a C++ stream (4), two
runs on one --out (6), non-finite options and a max_tokens no sample fits (15), a run resumed after its last step
(16). Each builds the fault for real (a truncated file, /dev/full, a held lock) and asserts the one-line outcome."""
from __future__ import annotations

import json
import shutil

import pytest
from test_reliability import args_for, cfg_for, data, finished, invoke, one_line_error  # noqa: F401 (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_an_empty_latest_resumes_from_the_newest_complete_step(data, finished, tmp_path):
    """A kill inside the write of `latest` left it empty; --resume continues from the newest complete step folder,
    and a run resumed after its last step reports the logged final loss, not nan."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    run_config = json.loads((out / "run_config.json").read_text())
    run_config["config"]["out"] = str(out)  # the copy is the same run in another folder
    (out / "run_config.json").write_text(json.dumps(run_config))
    (out / "engine" / "latest").write_text("")
    (out / "engine" / "step00000001").mkdir()  # an older, incomplete leftover is not chosen
    cfg = cfg_for(data["clean"], out, save_every=1)
    res = invoke(*args_for(cfg), "--resume")
    assert res.exit_code == 0, res.output[-2000:]
    assert "resuming from" in res.output and "step00000002 at step 2" in res.output
    assert "final loss nan" not in res.output and "final loss " in res.output


def test_latest_is_replaced_atomically(tmp_path):
    from train.engine import latest_tag, write_latest

    (tmp_path / "step00000003").mkdir()
    write_latest(tmp_path, "step00000003")
    assert (tmp_path / "latest").read_text() == "step00000003" and latest_tag(tmp_path) == "step00000003"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "latest").write_text("")
    assert latest_tag(tmp_path) is None  # no complete step folder: nothing to resume, not an AssertionError


def test_a_full_disk_seen_as_an_iostream_error_is_one_line(data, tmp_path):
    """torch.save of a small object into a full disk fails in its C++ stream with `basic_ios::clear: iostream
    error` (not ENOSPC): the optimizer states file of the first engine save is /dev/full here."""
    out = tmp_path / "full"
    target = out / "engine" / "step00000001" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    target.parent.mkdir(parents=True)
    target.symlink_to("/dev/full")
    text = one_line_error(invoke(*args_for(cfg_for(data["clean"], out, save_every=1)), "--token-cache", "off"))
    assert "no space left on device" in text
    assert not (out / "engine" / "step00000001").exists() and not (out / "engine" / "latest").exists()


def test_the_iostream_error_is_recognised_as_a_full_disk():
    import torch

    from train.guard import is_disk_full

    with pytest.raises(RuntimeError) as err:
        torch.save({"a": torch.zeros(2)}, "/dev/full")
    assert is_disk_full(err.value), str(err.value)


def test_a_second_run_on_a_busy_out_is_refused(data, tmp_path):
    from infra.lock import run_lock
    from train.preflight import RUN_LOCK

    out = tmp_path / "busy"
    with run_lock(str(out), RUN_LOCK, "vtl-train"):  # the first run, holding --out
        text = one_line_error(invoke(*args_for(cfg_for(data["clean"], out))))
    assert "being written by another vtl-train run" in text
    assert sorted(p.name for p in out.iterdir()) == []  # the refused run wrote nothing


@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--epochs", "inf"), ("--weight-decay", "nan")])
def test_non_finite_options_are_refused(data, tmp_path, option, value):
    args = args_for(cfg_for(data["clean"], tmp_path / "o"))
    del args[args.index("--max-steps"):args.index("--max-steps") + 2]  # --epochs decides the steps
    if option in args:  # replace its value: an option given twice is refused on its own
        del args[args.index(option):args.index(option) + 2]
    text = one_line_error(invoke(*args, option, value))
    assert "must be a finite number" in text and not (tmp_path / "o").exists()


def test_no_sample_fitting_max_tokens_is_one_line(data, tmp_path):
    """The loader's worker process finds no sample short enough; the refusal crosses the DataLoader in one line."""
    args = args_for(cfg_for(data["clean"], tmp_path / "o"))
    if "--max-tokens" in args:
        del args[args.index("--max-tokens"):args.index("--max-tokens") + 2]
    text = one_line_error(invoke(*args, "--max-tokens", "4"))
    assert "fits max_tokens=4" in text
