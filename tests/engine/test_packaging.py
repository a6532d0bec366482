"""A non-editable `pip install .` ships the samples: `ipsec-console check` works from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What setup.py/pyproject.toml package; copied so the build leaves no build/ or egg-info in the work tree.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "engine", "console", "themes", "sample-configs")


@pytest.mark.slow
def test_installed_wheel_checks_its_samples_from_another_folder(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    env_dir = tmp_path / "venv"
    # Dependencies (textual, cryptography, ...) come from this interpreter's site-packages (a venv's, in
    # CI: system_site_packages would mean Debian's bare python3), listed in a .pth file; only our package
    # is installed. No pip inside (ensurepip is slow): this interpreter's pip installs with --python.
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_dir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site_dir, "_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                              "--no-deps", str(src)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import engine, engine.policy as p; print(engine.__file__);"
                            "print(p.sample_path('lab.toml'))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    engine_file, lab = where.stdout.split()
    site = str(env_dir)
    assert engine_file.startswith(site) and lab.startswith(site), where.stdout  # the installed copy, not ROOT

    cli = env_dir / "bin" / "ipsec-console"
    for arg in (lab, "site-to-site.toml", "lab.toml"):
        run = subprocess.run([str(cli), "check", arg], cwd=elsewhere, env=env, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert " error: " not in run.stdout
    bad = elsewhere / "bad.toml"
    bad.write_text('[engine]\ndatapath = "xfrm"\n')
    run = subprocess.run([str(cli), "check", "bad.toml"], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1 and run.stdout.startswith("bad.toml:2:1: engine.datapath: error:")
