"""The web page: upload a photo, get the video (Gradio; everything local, no analytics).

    python app.py                                          # demo model, http://127.0.0.1:7860
    python app.py --checkpoint checkpoint/fashionflow --host 0.0.0.0 --port 7860 --device cuda

--checkpoint is a pipeline folder, as for inference.py; a folder that does not load is shown
as a message on the page. The page's endpoint `/generate` is also an API (README, "Web page").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO_CHECKPOINT = ROOT / "checkpoint" / "demo"
DEMO_IMAGES = ROOT / "fashion_dataset" / "demo"


def parse_args(argv=None) -> argparse.Namespace:
    from fashionflow.web import MAX_FILE_SIZE, MAX_PIXELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="pipeline folder (default: the demo model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--examples", default=str(DEMO_IMAGES), help="folder of example photos shown on the page")
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="largest upload, e.g. 20mb")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest photo in pixels (width x height)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from fashionflow.web import serve

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    is_demo = Path(args.checkpoint).resolve() == DEMO_CHECKPOINT
    try:
        serve(args.checkpoint, args.host, args.port, device, args.examples, is_demo, args.max_file_size,
              args.max_pixels)
    except OSError as error:  # e.g. the port is taken
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
