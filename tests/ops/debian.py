"""Bare Debian roots (12 bookworm, 13 trixie) for running the README's commands as a new admin would.

``.ci/debian-root SUITE ROOT`` debootstraps a release's root once (cached in
``base(suite)``, the roots side by side); each run mounts a fresh overlay on
top of it inside a private mount namespace, copies this source tree in, and
runs a shell command there with a clean environment (Debian's own python3
only: no pyenv, no pip configuration of this machine). The overlay and every
mount vanish with the namespace, so the cached root stays bare.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IPSEC_CONSOLE_CI_CACHE", "/var/tmp/ipsec-console-ci"))
"""Where the roots are cached, one folder per suite (the same cache .ci/run uses)."""
RELEASES = {"bookworm": ("12", "3.11"), "trixie": ("13", "3.13")}
"""The Debian releases the README's set-up is proven on: suite -> (version, its python3)."""
SRC = "/root/ipsec-console"
"""Where the source tree lands inside the root (the folder the README's commands run in)."""
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "xterm-256color",
    "USER": "root",
    "LOGNAME": "root",
}
"""A root login shell's environment, nothing of this machine's (PIP_*, PYENV_*, ...)."""


def readme_commands(readme: Path = ROOT / "README.md") -> tuple[str, str]:
    """The two commands of the README's "Set up" section: (install and run, install and test)."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"^## Set up.*?(?=^## )", text, re.S | re.M)
    if m is None:
        raise AssertionError("README.md has no '## Set up' section")
    blocks = re.findall(r"^```sh\n(.*?)^```", m.group(0), re.S | re.M)
    if len(blocks) != 2:
        raise AssertionError(f"README.md's Set up section has {len(blocks)} sh blocks, expected 2")
    commands = []
    for b in blocks:
        lines = [ln for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if len(lines) != 1:
            raise AssertionError(f"a Set up block should be one command line, got {lines}")
        commands.append(lines[0].strip())
    return commands[0], commands[1]


def base(suite: str) -> Path:
    """The cached bare root of ``suite``."""
    if suite not in RELEASES:
        raise ValueError(f"unknown Debian suite {suite!r}")
    return CACHE / suite


def ensure_base(suite: str) -> Path:
    """Debootstrap ``suite``'s root if it is not cached yet; its path."""
    subprocess.run([str(ROOT / ".ci" / "debian-root"), suite, str(base(suite))], check=True, timeout=900)
    return base(suite)


def source_files() -> list[str]:
    """The tree as a checkout has it: tracked and new files, not what .gitignore hides."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


class Overlay:
    """A throw-away root: ``suite``'s cached root below, an upper dir in a temp folder, the source tree in SRC."""

    def __init__(self, suite: str) -> None:
        self.base = base(suite)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ipsec-console-{suite}-"))
        self.upper = self.tmp / "upper"
        for d in ("upper", "work", "merged"):
            (self.tmp / d).mkdir()
        src = self.upper / SRC.lstrip("/")
        for rel in source_files():
            target = src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        etc = self.upper / "etc"
        etc.mkdir(exist_ok=True)
        shutil.copy2("/etc/resolv.conf", etc / "resolv.conf")  # name resolution for apt and pip
        # This host's local trust anchors (a network that inspects TLS has its own CA): a Debian
        # installed on the same network would have them too. ca-certificates, which the README's
        # apt-get pulls in, adds them to the bundle Debian's pip uses.
        local_cas = self.upper / "usr" / "local" / "share" / "ca-certificates"
        local_cas.mkdir(parents=True)
        for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy2(crt, local_cas / crt.name)

    def command(self, shell_command: str) -> list[str]:
        """argv that runs ``shell_command`` with /bin/sh in SRC inside the root, as root with ENV."""
        script = self.upper / "tmp" / "ipsec-console-command.sh"
        script.parent.mkdir(exist_ok=True)
        script.parent.chmod(0o1777)  # the upper /tmp hides the root's: keep its sticky, world-writable mode
        script.write_text(f"cd {SRC}\n{shell_command}\n")
        merged = self.tmp / "merged"
        env = " ".join(f"{k}={v}" for k, v in ENV.items())
        setup = (f"mount -t overlay overlay -o lowerdir={self.base},upperdir={self.upper},workdir={self.tmp / 'work'} "
                 f"{merged} && mount -t proc proc {merged}/proc && mount --rbind /dev {merged}/dev && "
                 f"exec chroot {merged} /usr/bin/env -i {env} /bin/sh /tmp/ipsec-console-command.sh")
        return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "/bin/sh", "-c",
                setup]

    def remove(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
