"""The pages' small pure helpers: links, sizes, durations, diffs, image sizes."""

from __future__ import annotations

import json

from conveyor.web.pages.forge import MAX_DIFF_LINES, split_diff
from conveyor.web.pages.registry import image_size
from conveyor.web.render import duration, markdown, safe_url, short, size, ui_link


def test_api_run_links_become_run_pages() -> None:
    assert ui_link("http://127.0.0.1:8080/api/v1/runs/42") == "/runs/42"
    assert ui_link("/api/v1/runs/7") == "/runs/7"
    assert ui_link("http://agent:9000/status") == "http://agent:9000/status"
    assert ui_link("/api/v1/runs/7/logs") == "/api/v1/runs/7/logs"


def test_sizes_durations_and_digests() -> None:
    assert size(512) == "512 B" and size(1536) == "1.5 KiB" and size(3 * 1024**3) == "3.0 GiB"
    assert duration(None) == "–" and duration(59) == "59s" and duration(3725) == "1h 2m" and duration(90000) == "1d 1h"
    assert short("sha256:" + "ab" * 32, 19) == "ab" * 9 + "a" and short("0123456789abcdef") == "0123456789"


def test_diff_is_split_per_file_with_line_kinds() -> None:
    text = ("diff --git a/rendered/x.yaml b/rendered/x.yaml\n--- a/rendered/x.yaml\n+++ b/rendered/x.yaml\n"
            "@@ -1 +1 @@\n-old\n+new\ndiff --git a/values.yaml b/values.yaml\n@@ -0,0 +1 @@\n+a: 1\n")
    files = split_diff(text)
    assert [f.path for f in files] == ["rendered/x.yaml", "values.yaml"]
    kinds = [k for k, _ in files[0].lines]
    assert kinds[:6] == ["file", "", "", "hunk", "del", "add"]
    assert split_diff("") == []
    big = split_diff("diff --git a/x b/x\n@@ -0,0 +1,3000 @@\n" + "".join(f"+{i}\n" for i in range(3000)))[0]
    assert len(big.lines) == MAX_DIFF_LINES and big.hidden == 3003 - MAX_DIFF_LINES


def test_image_size_adds_config_and_layers() -> None:
    m = json.dumps({"config": {"size": 10}, "layers": [{"size": 100}, {"size": 1000}]}).encode()
    assert image_size(m, len(m)) == len(m) + 1110
    index = json.dumps({"manifests": [{"size": 5}]}).encode()
    assert image_size(index, 77) == 77 and image_size(b"not json", 3) == 3


def test_only_http_and_local_links_are_links() -> None:
    for ok in ("https://ci.example/run/1", "http://10.0.0.1:8080/x", "/runs/7", "HTTPS://x.example/"):
        assert safe_url(ok) == ok
    for bad in ("javascript:alert(1)", " javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>x</b>",
                "vbscript:x", "//evil.example/x", "http:evil", "", None, "file:///etc/passwd"):
        assert safe_url(bad) == "", bad


def test_bodies_are_markdown_without_raw_html_or_script_links() -> None:
    html = str(markdown("**bold** and `code`\n\n```\nfenced <b>\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                        "<script>alert(1)</script> <img src=x onerror=alert(2)>\n\n"
                        "[click](javascript:alert(3)) [ok](https://x.example/) <javascript:alert(4)>"))
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<table>" in html
    assert "fenced &lt;b&gt;" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html.lower()
    assert "&lt;script&gt;" in html  # raw HTML is shown as text, not run
    assert '<a href="https://x.example/" rel="noopener noreferrer nofollow">ok</a>' in html
