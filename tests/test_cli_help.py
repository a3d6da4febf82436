"""`--help` of every console script and every subcommand works and imports none of the heavy libraries.

Commands are listed from the typer apps at run time, so commands added later are covered without editing this file.
Each app is checked in a fresh interpreter (a subprocess), because this test process has imported them already.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "ray", "deepspeed", "decord", "open_clip", "transformers", "gradio")
APPS = {"vtl-pipeline": "pipeline.cli", "vtl-train": "train.cli", "vtl-eval": "eval.cli", "vtl-chat": "eval.chat_cli",
        "vtl-import-weights": "train.import_cli", "vtl-export": "train.export_cli"}
ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: `--help` of the app and of every (nested) subcommand, recording after each one which
# heavy modules have been imported so far, then one JSON line.
PROBE = r"""
import json, sys
from importlib import import_module
import typer
HEAVY = %r
app = import_module(sys.argv[1]).app
root = typer.main.get_command(app)
report = {}
def walk(cmd, path):
    code = cmd.main(args=[*path, "--help"], prog_name=sys.argv[2], standalone_mode=False)
    report[" ".join(path) or "(top)"] = {"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}
    sub = cmd
    for name in path:
        sub = sub.commands[name]
    if isinstance(getattr(sub, "commands", None), dict):   # a group (typer vendors its own click)
        for name in sub.commands:
            walk(cmd, [*path, name])
walk(root, [])
print("REPORT " + json.dumps(report))
""" % (HEAVY,)


def _probe(module: str, script: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, module, script], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


@pytest.mark.parametrize("script", sorted(APPS))
def test_help_of_every_command_imports_nothing_heavy(script):
    report = _probe(APPS[script], script)
    assert "(top)" in report
    for path, r in report.items():
        assert r["code"] in (0, None), f"{script} {path} --help exited {r['code']}"
        assert not r["heavy"], f"`{script} {path} --help` imported {', '.join(r['heavy'])}"
    if script == "vtl-pipeline":
        assert {"inspect", "synth"} <= set(report)


@pytest.mark.parametrize("script", sorted(APPS))
def test_console_script_help_runs(script):
    exe = Path(sys.executable).parent / script
    assert exe.exists(), f"{script} not installed in {exe.parent} (pip install -e .)"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Usage" in proc.stdout
