"""Loader throughput: LM tokens/s (pystdlib, B=32, T=256) and vision images/s (digits, B=128).

The loader must outpace a small CPU model by >= 20x (comfortably > 2M tokens/s) so that it is
never what a sweep waits on. Prints a summary, then, as the last line, only the LM tokens/s.
Usage: python bench/loader.py [seconds per measurement, default 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from dnasweep.data import DataConfig, LMSampler, VisionSampler, load_data  # noqa: E402


def rate(step, seconds: float) -> float:
    """Calls of `step` per second, measured for about `seconds` after one warm-up call."""
    step()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(50):
            step()
        n += 50
    return n / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    t0 = time.perf_counter()
    lm = load_data(DataConfig(source="pystdlib"), "lm")
    load_s = time.perf_counter() - t0
    b, t = 32, 256
    tokens_s = rate(LMSampler(lm.train, b, t, seed=0).next, seconds) * b * t
    vis = load_data(DataConfig(source="digits"), "vision")
    vb = 128
    images_s = rate(VisionSampler(vis.train_x, vis.train_y, vb, 0, vis.mean, vis.std).next, seconds) * vb
    print(f"pystdlib load: {load_s:.2f} s ({lm.describe()})")
    print(f"LMSampler B={b} T={t}: {tokens_s / 1e6:.1f}M tokens/s")
    print(f"VisionSampler digits B={vb}: {images_s / 1e3:.0f}k images/s")
    print(f"{tokens_s:.0f}")


if __name__ == "__main__":
    main()
