"""benchmarks/clip_encoding.py --tiny: what it reports must be what it measured."""

from __future__ import annotations


def test_clip_encoding_tiny_times_every_mode_and_matches_fp32(single_thread, capsys):
    """benchmarks/clip_encoding.py --tiny: the old path and the new one in fp32 give the same
    features (cosine 1 to the new fp32 path), the bf16 modes stay close, every rate is positive."""
    import clip_encoding

    result = clip_encoding.main(["--tiny", "--images", "12", "--batch-size", "8", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = {(r["mode"], r["source_size"]): r for r in result["results"]}
    assert set(rows) == {(m, s) for m in clip_encoding.MODES for s in (16, 37)}
    for (mode, _), r in rows.items():
        assert r["images_per_s"] > 0 and r["speedup_vs_old"] > 0
        assert r["min_cosine_vs_fp32"] >= (1 - 1e-6 if mode in ("old", "fp32") else 0.999)
    assert "16 px  bf16_autocast" in out and "37 px  old" in out
