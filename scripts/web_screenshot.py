"""Screenshot of the web page for the README (docs/web_page.png), taken by headless chromium.

    python scripts/web_screenshot.py [--checkpoint checkpoint/demo] [--output docs/web_page.png]

Starts `app.py`, clicks the first example photo, Generate with the page's defaults, waits for
the video and the frame strip, and saves the browser's view. Needs Debian's chromium and
chromium-driver (`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fashionflow import browser  # noqa: E402
from fashionflow.images import list_images  # noqa: E402
from fashionflow.utils import atomic_path  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoint" / "demo"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "web_page.png"))
    args = parser.parse_args(argv)
    reason = browser.browser_missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    example = list_images(ROOT / "fashion_dataset" / "demo")[0]
    with browser.AppServer(["--checkpoint", args.checkpoint]) as server, browser.chromium(1280, 1060) as page:
        browser.open_page(page, server.url)
        browser.click_example(page, 0, example.name)
        browser.click(page, "generate")
        browser.wait_for_video(page)
        browser.wait(page, lambda d: d.find_elements("css selector", "#strip img"), 60, "no frame strip")
        page.execute_script("window.scrollTo(0, 0); document.querySelector('#video video').pause();")
        with atomic_path(args.output) as tmp:
            page.save_screenshot(str(tmp))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
