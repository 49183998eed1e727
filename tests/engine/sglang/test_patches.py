"""Patches apply cleanly to the pinned SGLang, idempotently, and conflicts are reported."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scalesim.engine.sglang import patches
from scalesim.engine.sglang.patches import PatchState


def test_every_patch_is_applied_to_the_installed_sglang():
    found = patches.statuses()
    assert found, "no patches found"
    assert {s.state for s in found} == {PatchState.APPLIED}


def test_every_patch_has_a_header_saying_why():
    for patch in patches.patch_files():
        header = patch.read_text().split("\n--- a/", 1)[0]
        assert "Why:" in header and "Applies to: sglang==0.5.23" in header, patch.name


@pytest.fixture
def pristine_site(tmp_path):
    """A copy of the files the patches touch, reverted to stock SGLang."""
    site = patches.sglang_site_dir()
    for patch in patches.patch_files():
        for line in patch.read_text().splitlines():
            if line.startswith("+++ b/"):
                rel = line[len("+++ b/"):].split("\t")[0]
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(site / rel, tmp_path / rel)
        subprocess.run(["patch", "-p1", "-R", "-s", "-d", str(tmp_path), "-i", str(patch)], check=True)
    return tmp_path


def test_apply_is_idempotent(pristine_site):
    assert {s.state for s in patches.statuses(pristine_site)} == {PatchState.NOT_APPLIED}
    assert {s.state for s in patches.apply_all(pristine_site)} == {PatchState.APPLIED}
    assert {s.state for s in patches.apply_all(pristine_site)} == {PatchState.APPLIED}
    assert {s.state for s in patches.statuses(pristine_site)} == {PatchState.APPLIED}


def test_conflict_is_an_error(pristine_site):
    layers = pristine_site / "sglang/srt/lora/layers.py"
    layers.write_text(layers.read_text().replace("pin_memory=True", "pin_memory=False"))
    assert PatchState.CONFLICT in {s.state for s in patches.statuses(pristine_site)}
    with pytest.raises(patches.PatchError, match="does not apply"):
        patches.apply_all(pristine_site)
