"""Look at the built site as a reader's browser shows it: every page at a desktop width
(1280 px) and a phone width (390 px) in headless Chromium, with a screenshot of each, and a
list of what is cut off: a page that scrolls sideways, or a block (code, table, equation)
wider than its box that does not scroll inside it.

Run: mkdocs build -d site && python docs/check_layout.py site [--out shots] [--pages N]
Needs Chromium (Debian: apt-get install chromium). Exits 1 if anything is cut off.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTHS = (1280, 390)

# Run in the page once it has loaded: what overflows, and whether the reader can scroll to it.
PROBE = """
<script>
window.addEventListener("load", () => {
  const scrolls = (el) => {
    for (let node = el; node && node !== document.body; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (["auto", "scroll"].includes(style.overflowX) && node.scrollWidth > node.clientWidth) {
        return true;
      }
    }
    return false;
  };
  const cut = [];
  const blocks = ".md-content pre, .md-content table, math[display=block]";
  for (const el of document.querySelectorAll(blocks)) {
    if (el.scrollWidth > el.clientWidth + 1 && !scrolls(el)) {
      cut.push(el.tagName.toLowerCase() + ": " + (el.textContent || "").trim().slice(0, 60));
    }
  }
  const sideways = document.documentElement.scrollWidth > window.innerWidth + 1;
  const out = document.createElement("pre");
  out.id = "layout-result";
  out.textContent = JSON.stringify({sideways, cut});
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_layout needs Chromium: apt-get install chromium")


def _browser(chromium: str, width: int, *args: str) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={width},2000",
        "--virtual-time-budget=3000",
        *args,
    ]


def check_page(chromium: str, page: Path, width: int, shot: Path | None) -> dict:
    """What is cut off on ``page`` at ``width`` (and a screenshot into ``shot``)."""
    html = page.read_text(encoding="utf-8")
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=page.parent, delete=False) as f:
        f.write(html.replace("</body>", PROBE + "</body>"))
        probed = Path(f.name)
    try:
        dom = subprocess.run(
            _browser(chromium, width, "--dump-dom", probed.as_uri()),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if shot is not None:
            subprocess.run(
                _browser(chromium, width, f"--screenshot={shot}", page.as_uri()),
                capture_output=True,
                timeout=60,
            )
    finally:
        probed.unlink()
    found = re.search(r'<pre id="layout-result">(.*?)</pre>', dom, flags=re.S)
    if found is None:
        return {"sideways": None, "cut": ["the page did not report (did it load?)"]}
    return json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build -d SITE)")
    parser.add_argument("--out", type=Path, help="write a PNG of each page and width here")
    parser.add_argument("--pages", type=int, default=0, help="only the first N pages (0: all)")
    args = parser.parse_args()
    chromium = _chromium()
    pages = sorted(p for p in args.site.rglob("index.html") if "assets" not in p.parts)
    pages = pages[: args.pages] if args.pages else pages
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    faults = 0
    for page in pages:
        name = str(page.parent.relative_to(args.site)) or "home"
        for width in WIDTHS:
            shot = args.out / f"{name.replace('/', '_')}-{width}.png" if args.out else None
            result = check_page(chromium, page, width, shot)
            problems = (["the page scrolls sideways"] if result["sideways"] else []) + [
                f"cut off: {c}" for c in result["cut"]
            ]
            for problem in problems:
                print(f"{name} at {width} px: {problem}")
            faults += len(problems)
    print(f"{len(pages)} pages at {', '.join(map(str, WIDTHS))} px: {faults} faults")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
