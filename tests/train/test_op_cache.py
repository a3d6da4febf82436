"""DeepSpeed's op build folder is keyed to the environment (two venvs must not rebuild each other's CPU Adam)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.op_cache import ENV_VAR, keyed_extensions_dir, set_extensions_dir


def test_folder_differs_per_prefix_and_torch_version(tmp_path):
    a = keyed_extensions_dir("2.5.1", prefix="/venvs/a", home=tmp_path)
    assert a == keyed_extensions_dir("2.5.1", prefix="/venvs/a", home=tmp_path)
    assert a.parent == tmp_path / ".cache" / "torch_extensions" and a.name.startswith("vtl-")
    assert a != keyed_extensions_dir("2.5.1", prefix="/venvs/b", home=tmp_path)
    assert a != keyed_extensions_dir("2.6.0", prefix="/venvs/a", home=tmp_path)


def test_user_choice_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert set_extensions_dir("2.5.1") == str(tmp_path / "mine")
    monkeypatch.delenv(ENV_VAR)
    assert set_extensions_dir("2.5.1") == str(keyed_extensions_dir("2.5.1"))
    assert os.environ[ENV_VAR] == str(keyed_extensions_dir("2.5.1"))


@pytest.mark.slow
def test_trainer_start_sets_the_keyed_folder_before_deepspeed():
    code = ("import os, sys, torch; from train.engine import init_distributed; init_distributed(); "
            "import torch.utils.cpp_extension as ce; print(os.environ['TORCH_EXTENSIONS_DIR']); "
            "print(ce._get_build_directory('probe', False))")
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["DS_ACCELERATOR"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    import torch

    folder, build = out.stdout.split()[-2:]
    assert folder == str(keyed_extensions_dir(torch.__version__, prefix=sys.prefix))
    assert build.startswith(folder)
