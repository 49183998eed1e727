"""Apply and check ScaleSim's diffs against the installed SGLang (the `patches/` folder).

Each patch is a unified diff with paths relative to site-packages (`a/sglang/...`), preceded
by a header saying why it exists. Applying is idempotent: a patch already in place is left
alone; one that neither applies nor is already applied is an error (a different SGLang).
"""

from __future__ import annotations

import enum
import importlib.util
import subprocess
from dataclasses import dataclass
from pathlib import Path

PATCH_DIR = Path(__file__).resolve().parents[3] / "patches"


class PatchState(enum.Enum):
    APPLIED = "applied"
    NOT_APPLIED = "not applied"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class PatchStatus:
    name: str
    state: PatchState


class PatchError(RuntimeError):
    """A patch neither applies cleanly nor is already applied."""


def sglang_site_dir() -> Path:
    """The directory holding the installed `sglang` package (without importing it)."""
    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        raise PatchError("sglang is not installed in this environment")
    return Path(spec.origin).resolve().parents[1]


def patch_files(patch_dir: Path = PATCH_DIR) -> list[Path]:
    return sorted(patch_dir.glob("*.patch"))


def _dry_run(patch: Path, site: Path, reverse: bool) -> bool:
    args = ["patch", "-p1", "--dry-run", "--silent", "--force", "-d", str(site), "-i", str(patch)]
    if reverse:
        args.insert(1, "--reverse")
    return subprocess.run(args, capture_output=True).returncode == 0


def status(patch: Path, site: Path) -> PatchStatus:
    if _dry_run(patch, site, reverse=True):
        return PatchStatus(patch.name, PatchState.APPLIED)
    if _dry_run(patch, site, reverse=False):
        return PatchStatus(patch.name, PatchState.NOT_APPLIED)
    return PatchStatus(patch.name, PatchState.CONFLICT)


def statuses(site: Path | None = None, patch_dir: Path = PATCH_DIR) -> list[PatchStatus]:
    site = site or sglang_site_dir()
    return [status(p, site) for p in patch_files(patch_dir)]


def apply_all(site: Path | None = None, patch_dir: Path = PATCH_DIR) -> list[PatchStatus]:
    """Apply every patch not yet applied; raise `PatchError` on the first conflict."""
    site = site or sglang_site_dir()
    done = []
    for patch in patch_files(patch_dir):
        current = status(patch, site)
        if current.state is PatchState.CONFLICT:
            raise PatchError(f"{patch.name} does not apply to {site / 'sglang'} (is it sglang 0.5.23?)")
        if current.state is PatchState.NOT_APPLIED:
            result = subprocess.run(
                ["patch", "-p1", "--silent", "--forward", "-d", str(site), "-i", str(patch)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise PatchError(f"{patch.name}: {result.stdout.strip()} {result.stderr.strip()}")
        done.append(PatchStatus(patch.name, PatchState.APPLIED))
    return done
