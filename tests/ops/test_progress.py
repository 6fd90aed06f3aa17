"""The long commands draw a progress bar on stderr that ends with a newline (logs and terminals stay tidy)."""

from __future__ import annotations

from pathlib import Path

from tests.ops.conftest import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "valid"


def test_load_and_reindex_end_their_progress_output_with_a_newline(tmp_path: Path) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("Organization-*.json"))[:3]
    assert files
    loaded = cli("load", *files, "--data-dir", str(tmp_path))
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert f"{len(files)}/{len(files)}".encode() in loaded.stderr and loaded.stderr.endswith(b"\n")
    assert f"Loaded {len(files)} of {len(files)} files".encode() in loaded.stdout
    reindexed = cli("reindex", "--data-dir", str(tmp_path))
    assert reindexed.returncode == 0, reindexed.stderr.decode()
    assert b"reindex" in reindexed.stderr and reindexed.stderr.endswith(b"\n")
    assert f"Reindexed {len(files)} resources".encode() in reindexed.stdout
