"""Download the UBC Fashion dataset: the official split lists, then 500 train + 100 test videos.

    python -m fashionflow.data.ubc_fashion --output-dir fashion_dataset

writes `fashion_dataset/train/*.mp4`, `fashion_dataset/test/*.mp4` and the lists it used
(`fashion_train.txt`, `fashion_test.txt`). Each video is streamed into a hidden temporary
file and renamed when complete, so a file under its final name is always whole; rerunning
skips those and fetches the rest (resume). Transient errors are retried with backoff; the run
ends with a summary and exits 1 if anything failed. Runs without torch.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from fashionflow.utils import atomic_path, atomic_write_text

# The dataset's site (https://vision.cs.ubc.ca/datasets/fashion/) publishes one URL per line.
LIST_URLS = {
    "train": "https://vision.cs.ubc.ca/datasets/fashion/resources/fashion_dataset/fashion_train.txt",
    "test": "https://vision.cs.ubc.ca/datasets/fashion/resources/fashion_dataset/fashion_test.txt",
}
USER_AGENT = "fashionflow-ubc-downloader"
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """One URL could not be fetched; `permanent` errors (404 ...) are not retried."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class Result:
    split: str
    name: str
    url: str
    status: str  # "downloaded", "present" or "failed"
    reason: str = ""


def _fetch(url: str, timeout: float, sink) -> int:
    """Stream `url` (http(s) or file) into the callable `sink`; returns the byte count."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(CHUNK_BYTES):
                sink(chunk)
                received += len(chunk)
    except urllib.error.HTTPError as error:
        permanent = 400 <= error.code < 500 and error.code not in (408, 429)
        raise DownloadError(f"HTTP {error.code} {error.reason}", permanent) from None
    except urllib.error.URLError as error:
        raise DownloadError(f"cannot connect ({error.reason})") from None
    except (OSError, ValueError) as error:  # timeouts, resets, http.client.IncompleteRead
        raise DownloadError(f"{type(error).__name__}: {error}") from None
    if expected is not None and received != int(expected):
        raise DownloadError(f"connection closed after {received} of {expected} bytes")
    if received == 0:
        raise DownloadError("empty response")
    return received


def with_retries(action, retries: int, wait: float):
    """Call `action()`; retry DownloadErrors that are not permanent, waiting wait * 2^k."""
    for attempt in range(retries + 1):
        try:
            return action()
        except DownloadError as error:
            if error.permanent or attempt == retries:
                if attempt:
                    raise DownloadError(f"{error} (after {attempt + 1} attempts)", error.permanent) from None
                raise
            time.sleep(wait * 2 ** attempt)


def read_list(source: str, timeout: float, retries: int, wait: float) -> list[str]:
    """The video URLs of a split list given as a URL or a local file (blank lines, # comments skipped)."""
    if os.path.isfile(source):
        text = Path(source).read_text()
    else:
        def fetch_text():
            parts: list[bytes] = []
            _fetch(source, timeout, parts.append)
            return b"".join(parts).decode("utf-8", errors="replace")

        text = with_retries(fetch_text, retries, wait)
    urls = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(u for u in urls if u and not u.startswith("#")))  # a repeated URL counts once


def file_name(url: str) -> str:
    """The video's file name: the last part of the URL's path (ids may hold + and -)."""
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise DownloadError(f"cannot name a file after URL {url!r}", permanent=True)
    return name


def download_video(url: str, destination: Path, timeout: float, retries: int, wait: float) -> str:
    """Fetch one video to `destination` unless already there; returns "present" or "downloaded"."""
    if destination.is_file() and destination.stat().st_size > 0:
        return "present"

    def attempt():
        with atomic_path(destination) as tmp, open(tmp, "wb") as handle:
            _fetch(url, timeout, handle.write)

    with_retries(attempt, retries, wait)
    return "downloaded"


def remove_stale_partials(folder: Path, names: list[str]) -> None:
    """Delete temporary files that a killed run left beside the videos of this list."""
    for name in names:
        stem, suffix = os.path.splitext(name)
        for stale in glob.glob(os.path.join(glob.escape(str(folder)), f".{glob.escape(stem)}.*.tmp{suffix}")):
            os.remove(stale)


def download_split(split: str, urls: list[str], folder: Path, args, progress) -> list[Result]:
    folder.mkdir(parents=True, exist_ok=True)
    results, jobs = [], {}
    for url in urls:
        try:
            jobs[url] = file_name(url)
        except DownloadError as error:
            results.append(Result(split, url, url, "failed", str(error)))
            progress.update()
    remove_stale_partials(folder, list(jobs.values()))
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(download_video, url, folder / name, args.timeout, args.retries, args.retry_wait):
                   (url, name) for url, name in jobs.items()}
        for future in as_completed(futures):
            url, name = futures[future]
            try:
                results.append(Result(split, name, url, future.result()))
            except DownloadError as error:
                results.append(Result(split, name, url, "failed", str(error)))
                progress.write(f"failed {split}/{name}: {error}")
            progress.update()
    return results


def summarize(results: list[Result]) -> str:
    count = {s: sum(r.status == s for r in results) for s in ("downloaded", "present", "failed")}
    lines = [f"{count['downloaded']} downloaded, {count['present']} already present, {count['failed']} failed"]
    lines += [f"  failed {r.split}/{r.name} ({r.url}): {r.reason}" for r in results if r.status == "failed"]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="fashion_dataset", help="gets train/, test/ and the lists")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=sorted(LIST_URLS))
    for split, url in LIST_URLS.items():
        parser.add_argument(f"--{split}-list", default=url, help=f"URL or local file of the {split} list")
    parser.add_argument("--workers", type=int, default=4, help="parallel downloads")
    parser.add_argument("--retries", type=int, default=4, help="retries per file after the first try")
    parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds before the first retry (doubles)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    output = Path(args.output_dir)
    lists, results = {}, []
    for split in args.splits:
        source = getattr(args, f"{split}_list")
        try:
            lists[split] = read_list(source, args.timeout, args.retries, args.retry_wait)
        except DownloadError as error:
            results.append(Result(split, f"fashion_{split}.txt", source, "failed", f"split list: {error}"))
            continue
        atomic_write_text(output / f"fashion_{split}.txt", "\n".join(lists[split]) + "\n")
    with tqdm(total=sum(map(len, lists.values())), unit="video", desc="UBC Fashion") as progress:
        for split, urls in lists.items():
            results += download_split(split, urls, output / split, args, progress)
    print(summarize(results), file=sys.stderr)
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
