"""UBC Fashion downloader against a local HTTP server: lists, retries, resume, failures."""

import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fashionflow.data import ubc_fashion
from fashionflow.video_io import write_mp4

ROOT = Path(__file__).resolve().parents[1]


class FakeUBCServer(BaseHTTPRequestHandler):
    """Serves /lists/{train,test}.txt and /videos/NAME; some videos fail on purpose."""

    video = b""
    hits: Counter = Counter()

    def log_message(self, *args):
        pass

    def send_body(self, body: bytes, length: int | None = None):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.hits[self.path] += 1
        base = f"http://127.0.0.1:{self.server.server_port}/videos"
        if self.path == "/lists/train.txt":
            names = ["A1P+0ZhMAiS.mp4", "91-abc.mp4", "missing.mp4", "flaky.mp4", "cut.mp4", "91-abc.mp4"]
            self.send_body(("# official list\n\n" + "\n".join(f"{base}/{n}" for n in names) + "\n").encode())
        elif self.path == "/lists/test.txt":
            self.send_body(f"{base}/t1.mp4\r\n".encode())
        elif self.path == "/videos/flaky.mp4" and self.hits[self.path] == 1:
            self.send_error(503, "busy")  # transient: the retry succeeds
        elif self.path == "/videos/cut.mp4":
            self.send_body(self.video[:100], length=len(self.video))  # connection drops mid-file
        elif self.path.startswith("/videos/") and "missing" not in self.path:
            self.send_body(self.video)
        else:
            self.send_error(404, "not found")


@pytest.fixture
def server(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    FakeUBCServer.video = write_mp4(tmp_path / "src.mp4", frames, fps=10).read_bytes()
    FakeUBCServer.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeUBCServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def args_for(url, out):
    return ["--output-dir", str(out), "--train-list", f"{url}/lists/train.txt", "--test-list", f"{url}/lists/test.txt",
            "--retries", "2", "--retry-wait", "0", "--timeout", "10", "--workers", "2"]


def test_download_retries_reports_failures_and_resumes(server, tmp_path, capsys):
    out = tmp_path / "fashion_dataset"
    (out / "train").mkdir(parents=True)
    (out / "train" / ".flaky.abc123.tmp.mp4").write_bytes(b"left by a killed run")

    assert ubc_fashion.main(args_for(server, out)) == 1
    summary = capsys.readouterr().err
    assert "4 downloaded, 0 already present, 2 failed" in summary
    assert "failed train/missing.mp4" in summary and "HTTP 404" in summary
    assert "failed train/cut.mp4" in summary and "closed after 100 of" in summary and "after 3 attempts" in summary
    video = FakeUBCServer.video
    assert sorted(p.name for p in (out / "train").iterdir()) == ["91-abc.mp4", "A1P+0ZhMAiS.mp4", "flaky.mp4"]
    assert all((out / "train" / n).read_bytes() == video for n in ["91-abc.mp4", "A1P+0ZhMAiS.mp4", "flaky.mp4"])
    assert [p.name for p in (out / "test").iterdir()] == ["t1.mp4"]
    assert (out / "fashion_test.txt").read_text().strip().endswith("/videos/t1.mp4")
    assert FakeUBCServer.hits["/videos/missing.mp4"] == 1  # 404 is not retried
    assert FakeUBCServer.hits["/videos/cut.mp4"] == 3  # first try + 2 retries
    assert FakeUBCServer.hits["/videos/91-abc.mp4"] == 1  # listed twice, fetched once

    # rerun through the real command line: finished files are skipped, failures tried again
    before = FakeUBCServer.hits.copy()
    run = subprocess.run([sys.executable, "-m", "fashionflow.data.ubc_fashion", *args_for(server, out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "0 downloaded, 4 already present, 2 failed" in run.stderr
    new = FakeUBCServer.hits - before
    assert set(new) == {"/lists/train.txt", "/lists/test.txt", "/videos/missing.mp4", "/videos/cut.mp4"}


def test_unreachable_list_is_reported_and_other_splits_still_run(server, tmp_path, capsys):
    out = tmp_path / "out"
    local_list = tmp_path / "test_list.txt"
    local_list.write_text(f"{server}/videos/t1.mp4\n")
    code = ubc_fashion.main(["--output-dir", str(out), "--train-list", f"{server}/lists/nope.txt",
                             "--test-list", str(local_list), "--retry-wait", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 downloaded, 0 already present, 1 failed" in err
    assert "fashion_train.txt" in err and "split list: HTTP 404" in err
    assert (out / "test" / "t1.mp4").read_bytes() == FakeUBCServer.video


def test_file_names_keep_ids_and_refuse_paths():
    assert ubc_fashion.file_name("https://m.media-amazon.com/images/I/A1P+0ZhMAiS.mp4") == "A1P+0ZhMAiS.mp4"
    assert ubc_fashion.file_name("http://x/a/91%2Dz-q.mp4?v=1") == "91-z-q.mp4"
    for bad in ("http://x/videos/", "http://x/a/..%2F..%2Fetc", "http://x/.hidden.mp4"):
        with pytest.raises(ubc_fashion.DownloadError):
            ubc_fashion.file_name(bad)
