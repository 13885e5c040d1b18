"""Record the README's pictures of the live page: a screenshot and a GIF of one text being denoised.

Starts ``diffusionbert serve`` on a free port, drives the page in headless Chromium (Playwright on the system
browser), generates one text from a data-to-text source, then steps the replay slider through every state
and stores each as a frame. Run by ``make page-images``; deterministic for a given model, seed and browser.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

SOURCE = "name[The Eagle], eatType[coffee shop], food[French], area[riverside], familyFriendly[yes]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/demo/final")
    parser.add_argument("--out", default="docs/img", help="folder for serve.png and serve.gif")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's saved decoding)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame-ms", type=int, default=110, help="how long each state shows in the GIF")
    args = parser.parse_args()
    browser = os.environ.get("DIFFUSIONBERT_CHROMIUM") or shutil.which("chromium")
    if browser is None:
        print("error: no Chromium found; run bash tools/install_browser.sh", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "diffusionbert.cli",
        "serve",
        "--checkpoint",
        args.checkpoint,
        "--port",
        "0",
    ]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        found = re.search(r"http://\S+/", line)
        if not found:
            print(f"error: serve did not start ({line.strip() or 'no output'})", file=sys.stderr)
            return 2
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=browser)
            page = chromium.new_page(viewport={"width": 980, "height": 720}, device_scale_factor=1)
            page.goto(found.group(0))
            page.wait_for_selector("body[data-phase=idle]")
            page.click("#mode-source")
            page.fill("#source-text", args.source)
            if args.steps is not None:
                page.fill("#steps", str(args.steps))
            page.fill("#seed", str(args.seed))
            page.select_option("#pace", "0")
            page.click("#generate")
            page.wait_for_selector("body[data-phase=done]", timeout=120_000)
            page.screenshot(path=str(out / "serve.png"), full_page=True)
            states = int(page.get_attribute("#step-slider", "max") or 0)
            top = page.locator("#modes").bounding_box()
            bottom = page.locator("#legend").bounding_box()
            assert top and bottom
            clip = {
                "x": 0,
                "y": top["y"] - 8,
                "width": 980,
                "height": bottom["y"] + bottom["height"] - top["y"] + 16,
            }
            frames = []
            for state in range(states + 1):
                page.fill("#step-slider", str(state))
                frames.append(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))
            chromium.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    both = Image.new("RGB", (frames[0].width, 2 * frames[0].height))  # blanks first, colours last
    both.paste(frames[0], (0, 0))
    both.paste(frames[-1], (0, frames[0].height))
    palette = both.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    quantized = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    durations = [args.frame_ms] * (len(frames) - 1) + [2500]
    quantized[0].save(
        out / "serve.gif",
        save_all=True,
        append_images=quantized[1:],
        duration=durations,
        loop=0,
        optimize=True,
    )
    print(f"wrote {out / 'serve.png'} and {out / 'serve.gif'} ({len(frames)} states)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
