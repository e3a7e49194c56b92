"""The web viewer (docs/viewer.md) in a real headless Chromium, against a real
``hostlog agent`` with its real ``/api/v1/logs`` and ``/api/v1/tail``.

Records are sent by the real ``logger`` to the agent's syslog TCP listener.
The browser asks for the key, shows the last records in the colours of
``hostlog query``, follows new ones live, narrows what it shows when a
filter changes (and puts the filter in the URL, and reads it back from
there), shows every field of a record clicked, holds new records while
paused, and says so when the tail could not keep up with it. The page's own
parsers and formats (the SSE reader, the URL's filters, the grep
highlighting, the histogram's bins, times) are checked with generated input
in the same browser.

Screenshots are kept under ``$HOSTLOG_TEST_ARTIFACTS/http_viewer`` when that
variable is set, else in the test's temporary directory.

One agent and one browser for the module; every process started here is
stopped by its PID; every wait is bounded; only loopback is used.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.http.records import record_json
from hostlog.query.timespec import parse_timestamp
from hostlog.record import Record
from tests.agentproc import HOSTLOG, AgentProcess, free_port
from tests.conftest import need

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15.0
FOLLOWER_BUFFER = 64  # small, so that a burst overruns the tail (the dropped notice)
TAGS = {"instance": "i-viewer", "region": "test-region"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# computed colours of a line's message, by level (src/hostlog/query/output/colors.py, viewer.css)
RED, YELLOW, WHITE, PLAIN, GREY = ("rgb(255, 95, 95)", "rgb(215, 215, 95)", "rgb(255, 255, 255)",
                                   "rgb(208, 208, 208)", "rgb(138, 138, 138)")
STYLE_OF = {0: (RED, "700"), 1: (RED, "700"), 2: (RED, "700"), 3: (RED, "700"), 4: (YELLOW, "700"),
            5: (WHITE, "700"), 6: (PLAIN, "400"), 7: (GREY, "400")}
GROUP_OF = {0: "err", 1: "err", 2: "err", 3: "err", 4: "warning", 5: "notice", 6: "info", 7: "debug"}


@dataclass
class Served:
    agent: AgentProcess
    url: str
    syslog_port: int
    key: str
    ingest_key: str

    def send(self, tag: str, lines: list[tuple[int, str]]) -> None:
        """``lines`` (priority, message) through one ``logger`` process, in order
        over one TCP connection (``--prio-prefix``: each line its own priority)."""
        text = "".join(f"<{8 + prio}>{message}\n" for prio, message in lines)
        subprocess.run(["logger", "--tcp", "-n", "127.0.0.1", "-P", str(self.syslog_port), "-t", tag,
                        "--prio-prefix"], input=text.encode(), check=True, timeout=20)

    def api(self, path: str, params: dict[str, str], key: str | None = None) -> Any:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{self.url}{path}?{query}", headers={
            "Authorization": f"Bearer {key or self.key}", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())


def _create_key(agent: AgentProcess, name: str, scope: str) -> str:
    res = subprocess.run([*HOSTLOG, "key", "create", name, "--scope", scope, "-c", str(agent.config)],
                         env=agent.env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    need(shutil.which("logger") is not None, "logger (util-linux)")
    tmp = tmp_path_factory.mktemp("viewer-agent")
    syslog_port, http_port = free_port(), free_port()
    tags = ", ".join(f'{k} = "{v}"' for k, v in TAGS.items())
    agent = AgentProcess(tmp, f"""
[agent]
state_dir = "{tmp}/state"
hostname = "viewer-test"
tags = {{ {tags} }}

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{syslog_port}"]

[http]
listen = ["127.0.0.1:{http_port}"]
follower_buffer = {FOLLOWER_BUFFER}
""")
    key = _create_key(agent, "viewer", "read")
    ingest_key = _create_key(agent, "shipper", "ingest")
    agent.start()
    try:
        yield Served(agent, f"http://127.0.0.1:{http_port}", syslog_port, key, ingest_key)
    finally:
        agent.stop()
    assert "Traceback" not in agent.log_text(), agent.log_text()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("HOSTLOG_TEST_ARTIFACTS")
    path = Path(root) / "http_viewer" if root else tmp_path_factory.mktemp("viewer-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    need(os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK),
         f"{CHROMIUM} and {CHROMEDRIVER} (Debian: chromium, chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need(False, "selenium (the test extra)")
        raise
    tmp = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", f"--user-data-dir={tmp}/profile", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-domain-reliability",
                "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--lang=en-US"):
        options.add_argument(arg)
    service = Service(CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            proc = service.process  # chromedriver; it ends the browser it started
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


# -- helpers ---------------------------------------------------------------------------------

def wait(driver: Any, predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: predicate(), message=what)


ROWS_JS = """
return [...document.querySelectorAll('#log .row')].map((r) => {
  const msg = r.querySelector('.msg');
  const style = getComputedStyle(msg);
  return {cursor: r.dataset.cursor, level: r.dataset.level, msg: msg.textContent,
          marks: [...msg.querySelectorAll('mark')].map((m) => m.textContent),
          color: style.color, weight: style.fontWeight};
});
"""


def rows(driver: Any, marker: str = "") -> list[dict[str, Any]]:
    return [r for r in driver.execute_script(ROWS_JS) if marker in r["msg"]]


def status(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('status').textContent"))


def visible(driver: Any, element_id: str) -> bool:
    return bool(driver.execute_script(f"return !document.getElementById('{element_id}').hidden"))


def open_page(driver: Any, served: Served, query: str = "", *, key: str | None = None) -> None:
    """The page at ``/?query``; ``key`` given: put in the tab's storage first
    (as the page keeps it after asking once)."""
    driver.get(served.url + "/")
    driver.execute_script("sessionStorage.clear();" + (
        f"sessionStorage.setItem('hostlog.key', {json.dumps(key)});" if key else ""))
    driver.get(served.url + "/" + (f"?{query}" if query else ""))


def following(driver: Any) -> None:
    wait(driver, lambda: status(driver).startswith("following"), "the page follows the live tail")


class Shots:
    def __init__(self, driver: Any, directory: Path, prefix: str) -> None:
        self.driver, self.directory, self.prefix, self.n = driver, directory, prefix, 0

    def __call__(self, name: str) -> None:
        self.n += 1
        self.driver.save_screenshot(str(self.directory / f"{self.prefix}-{self.n:02d}-{name}.png"))

    def failure(self) -> None:
        self.driver.save_screenshot(str(self.directory / f"{self.prefix}-failure.png"))
        (self.directory / f"{self.prefix}-failure.html").write_text(self.driver.page_source)


def iso_micros(ts: str) -> int:
    """Microseconds since the epoch of the API's ``ts`` (``...T13:19:26.123456Z``)."""
    when = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def legend(driver: Any) -> dict[str, int]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#legend span')]"
        ".map((s) => [s.dataset.level, Number(s.dataset.count)]))")


def bars(driver: Any) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for cls, count in driver.execute_script(
            "return [...document.querySelectorAll('#histogram rect.bar')]"
            ".map((r) => [r.getAttribute('class'), Number(r.dataset.count)])"):
        counts[cls.split("g-")[1]] += count
    return dict(counts)


def details(driver: Any) -> list[tuple[str, str]]:
    return [tuple(pair) for pair in driver.execute_script(
        "return [...document.querySelectorAll('#details-table tr:not(.section)')]"
        ".map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent])")]


# -- the page as a user sees it ---------------------------------------------------------------------

def test_the_viewer_shows_follows_filters_and_opens_a_record(served: Served, browser: Any,
                                                              artifacts: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    mark = f"vw{uuid.uuid4().hex[:10]}"
    shot = Shots(browser, artifacts, "viewer")
    for tag in ("vw-alpha", "vw-beta"):
        name = tag.split("-")[1]
        served.send(tag, [(p, f"{mark} {name} seq {p}" + (" needle" if p % 2 == 0 else "")) for p in range(8)])
    try:
        # the key: asked once, a wrong one refused and asked again
        open_page(browser, served, f"grep={mark}")
        wait(browser, lambda: visible(browser, "keybox"), "the page asks for a key")
        shot("key-asked")
        browser.find_element(By.ID, "keyinput").send_keys("not-a-key", Keys.ENTER)
        wait(browser, lambda: "refused" in browser.find_element(By.ID, "keymsg").text, "a refused key is said")
        browser.find_element(By.ID, "keyinput").send_keys(served.key, Keys.ENTER)
        wait(browser, lambda: not visible(browser, "keybox"), "the key is taken")

        # the last records, in spool order, in the colours of `hostlog query`, the grep hit marked
        wait(browser, lambda: len(rows(browser, mark)) == 16, "the 16 records sent")
        shown = rows(browser, mark)
        seqs = [int(r["cursor"].rpartition(":")[2]) for r in shown]
        assert seqs == sorted(seqs)
        for r in shown:
            prio = int(re.search(r"seq (\d)", r["msg"])[1])
            assert (r["color"], r["weight"]) == STYLE_OF[prio], r
            assert r["level"] == GROUP_OF[prio]
            assert r["marks"] == [mark]
        for name in ("alpha", "beta"):
            assert [r["msg"].split(" seq ")[1][0] for r in shown if f" {name} " in r["msg"]] == list("01234567")
        # the histogram: volume by level of what is shown
        expected = {"err": 8, "warning": 2, "notice": 2, "info": 2, "debug": 2}
        wait(browser, lambda: legend(browser) == expected, "the histogram's legend counts the lines")
        assert bars(browser) == expected
        shot("records")

        # live: new records appear without a reload
        following(browser)
        served.send("vw-alpha", [(3, f"{mark} live one"), (6, f"{mark} live two")])
        wait(browser, lambda: len(rows(browser, mark)) == 18, "the live records")
        assert [r["msg"] for r in rows(browser, mark)[-2:]] == [f"{mark} live one", f"{mark} live two"]
        wait(browser, lambda: legend(browser) == {**expected, "err": 9, "info": 3}, "the histogram follows")
        shot("live")

        # a filter changes what is shown, and is in the URL
        grep = f"{mark}.*needle"
        for name, value in (("f-unit", "vw-alpha"), ("f-grep", grep)):
            box = browser.find_element(By.ID, name)
            box.clear()
            box.send_keys(value)
        browser.find_element(By.ID, "apply").click()
        wait(browser, lambda: "unit=vw-alpha" in browser.current_url, "the filter in the URL")
        assert urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query) == {
            "unit": ["vw-alpha"], "grep": [grep]}
        want = {f"{mark} alpha seq {p} needle" for p in (0, 2, 4, 6)}
        wait(browser, lambda: {r["msg"] for r in rows(browser)} == want, "only alpha's needles")
        assert all(r["marks"] == [r["msg"]] for r in rows(browser))
        following(browser)
        # one connection, in this order: once the second is shown, the first was passed over
        served.send("vw-alpha", [(6, f"{mark} live miss"), (6, f"{mark} live needle")])
        wait(browser, lambda: any("live needle" in r["msg"] for r in rows(browser)), "the live needle")
        assert not [r for r in rows(browser) if "live miss" in r["msg"]]
        assert len(rows(browser)) == 5
        shot("filtered")

        # filters read from the URL at load; the key is not asked again in this tab
        browser.get(f"{served.url}/?unit=vw-beta&priority=err&grep={mark}")
        wait(browser, lambda: len(rows(browser)) == 4, "beta's records at err and worse")
        assert not visible(browser, "keybox")
        assert sorted(r["msg"].split(" seq ")[1][0] for r in rows(browser)) == list("0123")
        values = browser.execute_script(
            "return ['f-unit', 'f-priority', 'f-grep', 'f-host'].map((id) => document.getElementById(id).value)")
        assert values == ["vw-beta", "err", mark, ""]

        # a click shows every field of the record, as the API has it
        line = browser.find_element(By.XPATH, "//div[contains(@class,'row')][contains(., 'beta seq 2 ')]")
        line.click()
        wait(browser, lambda: visible(browser, "details"), "the record's panel")
        (record,) = served.api("/api/v1/logs", {"unit": "vw-beta", "grep": f"{mark} beta seq 2 ", "n": "5"})[
            "records"]
        pairs = details(browser)
        for name, value in record.items():
            if name != "fields":
                assert (name, "-" if value is None else str(value)) in pairs, (name, value, pairs)
        assert record["fields"], record
        for name, value in record["fields"].items():
            assert (name, value) in pairs, (name, value, pairs)
        assert ("cursor", line.get_attribute("data-cursor")) in pairs
        for name, value in TAGS.items():
            assert (name, value) in pairs
        shot("details")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        wait(browser, lambda: not visible(browser, "details"), "Esc closes the panel")

        # pause holds new records (and counts them); resume shows them, in order
        browser.get(f"{served.url}/?grep={mark}.*paused")
        following(browser)
        browser.find_element(By.ID, "pause").click()
        served.send("vw-alpha", [(4, f"{mark} paused one"), (4, f"{mark} paused two")])
        wait(browser, lambda: "2 new" in status(browser), "the paused page counts what arrives")
        assert rows(browser) == []
        shot("paused")
        browser.find_element(By.ID, "pause").click()
        wait(browser, lambda: len(rows(browser)) == 2, "resume shows what arrived")
        assert [r["msg"] for r in rows(browser)] == [f"{mark} paused one", f"{mark} paused two"]
        shot("resumed")

        # a click on a bar of the histogram shows only its time range
        wait(browser, lambda: sum(legend(browser).values()) == 2, "the histogram of the two")
        stamps = browser.execute_script(
            "return [...document.querySelectorAll('#log .row .ts')].map((t) => t.title)")
        bar = browser.find_element(By.CSS_SELECTOR, "#histogram rect.bin-hit")
        since, until = bar.get_attribute("data-since"), bar.get_attribute("data-until")
        bar.click()
        wait(browser, lambda: "until" in browser.current_url, "the bar's range in the URL")
        assert urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query) == {
            "grep": [f"{mark}.*paused"], "since": [since], "until": [until]}
        low, high = (parse_timestamp(t, now_ns=0, utc=True) // 1000 for t in (since, until))
        inside = [msg for msg, ts in zip([f"{mark} paused one", f"{mark} paused two"], stamps)
                  if low <= iso_micros(ts) <= high]
        assert inside  # the first bar holds the first record at least
        wait(browser, lambda: [r["msg"] for r in rows(browser)] == inside and "until" in status(browser),
             "the records of that bar, not followed")
        shot("one-bar")
    except BaseException:
        shot.failure()
        raise


def test_a_key_without_the_read_scope_is_told_so(served: Served, browser: Any) -> None:
    open_page(browser, served, key=served.ingest_key)
    wait(browser, lambda: status(browser).startswith("403"), "the 403 of a key without read")
    assert "read" in status(browser)
    assert not visible(browser, "keybox")


def test_a_viewer_the_tail_could_not_keep_up_with_is_told_what_it_missed(
        served: Served, browser: Any, artifacts: Path) -> None:
    """The agent never waits for a reader: a burst larger than the follower
    buffer in one look at the spool is not queued for the page but counted,
    and the page says how many records it was not sent (what it shows and
    what it was told it missed add up to what was sent); a click on the
    notice reads them from the API, in their place."""
    from selenium.webdriver.common.by import By

    mark = f"vw{uuid.uuid4().hex[:10]}"
    shot = Shots(browser, artifacts, "dropped")
    open_page(browser, served, f"grep={mark}", key=served.key)
    following(browser)
    sent: list[str] = []

    def dropped() -> int:
        return int(browser.execute_script("return window.hostlogViewer.state.dropped"))

    try:
        for burst in range(5):  # a burst is usually seen in one or two looks at the spool; bounded tries
            lines = [f"{mark} burst {burst} line {i}" for i in range(1000)]
            served.send("vw-burst", [(6, line) for line in lines])
            sent += lines
            total = len(sent)
            wait(browser, lambda total=total: len(rows(browser, mark)) + dropped() == total,
                 "every record shown or said to be missed")
            if dropped():
                break
        notices = browser.execute_script(
            "return [...document.querySelectorAll('#log .notice')].map((n) => n.textContent)")
        assert notices and all("fell behind" in text for text in notices), notices
        assert f"{dropped()} not sent" in status(browser)
        wait(browser, lambda: legend(browser)["info"] == len(rows(browser, mark)), "the histogram")
        shot("notice")

        for notice in browser.find_elements(By.CSS_SELECTOR, "#log .notice.missed"):
            notice.click()
        wait(browser, lambda: len(rows(browser, mark)) == len(sent), "the missed records read")
        assert [r["msg"] for r in rows(browser, mark)] == sent
        assert browser.execute_script("return document.querySelectorAll('#log .notice').length") == 0
        assert dropped() == 0 and "not sent" not in status(browser)
        wait(browser, lambda: legend(browser)["info"] == len(sent), "the histogram counts them")
        shot("read")
    except BaseException:
        shot.failure()
        raise


def test_record_text_is_shown_as_text(served: Served, browser: Any) -> None:
    mark = f"vw{uuid.uuid4().hex[:10]}"
    message = f'{mark} <img src=x onerror="window.pwned=1"><b>bold</b> &amp; <script>window.pwned=2</script>'
    served.send("vw-html", [(6, message)])
    open_page(browser, served, f"grep={mark}", key=served.key)
    wait(browser, lambda: len(rows(browser, mark)) == 1, "the record")
    assert rows(browser, mark)[0]["msg"] == message
    assert browser.execute_script(
        "return document.querySelectorAll('#log img, #log b, #log script').length") == 0
    assert browser.execute_script("return window.pwned === undefined")


def test_the_page_and_its_files_need_no_key_and_are_the_packaged_ones(served: Served) -> None:
    static = resources.files("hostlog.http").joinpath("static")
    for path, name, kind in (("/", "index.html", "text/html"), ("/static/viewer.js", "viewer.js", "text/javascript"),
                             ("/static/viewer.css", "viewer.css", "text/css")):
        with urllib.request.urlopen(served.url + path, timeout=10) as resp:
            body, headers = resp.read(), resp.headers
        assert body == static.joinpath(name).read_bytes()
        assert headers["Content-Type"].startswith(kind)
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        request = urllib.request.Request(served.url + path, headers={"If-None-Match": headers["ETag"]})
        with pytest.raises(urllib.error.HTTPError) as not_modified:
            urllib.request.urlopen(request, timeout=10)
        assert not_modified.value.code == 304
    for path in ("/static/index.html", "/static/nope.js", "/static/..%2Fviewer.py", "/static/%2e%2e"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(served.url + path, timeout=10)
        assert missing.value.code == 404, path


def test_an_install_without_the_files_says_so_and_the_api_goes_on(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import aiohttp

    from hostlog.http import api, viewer
    from tests.support.http import ServedSpool

    def missing(*args: Any, **kw: Any) -> dict[str, viewer.Asset]:
        raise FileNotFoundError("static/index.html")

    monkeypatch.setattr(viewer, "load_assets", missing)

    async def main() -> tuple[int, str, int]:
        async with ServedSpool(tmp_path, unix=False, modules=[api, viewer]) as spool, \
                aiohttp.ClientSession() as session:
            async with session.get(spool.url + "/") as page:
                status, text = page.status, await page.text()
            async with session.get(spool.url + "/api/v1/logs") as logs:
                return status, text, logs.status  # 401: served (and refused for want of a key)

    status, text, api_status = asyncio.run(asyncio.wait_for(main(), 30))
    assert (status, api_status) == (500, 401)
    assert "viewer's files are missing" in text and "index.html" in text


# -- the page's own parsers and formats, with generated input, in the same browser ----------------------

PROPERTIES = settings(max_examples=40, deadline=None)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)


@pytest.fixture(scope="module")
def page(served: Served, browser: Any) -> Any:
    open_page(browser, served, "grep=no-record-has-this", key=served.key)
    wait(browser, lambda: browser.execute_script("return Boolean(window.hostlogViewer)"), "the page's script")
    return browser


def core(page: Any, body: str, *args: Any) -> Any:
    return page.execute_script("const core = window.hostlogViewer.core;\n" + body, *args)


SSE_EVENTS = st.lists(st.fixed_dictionaries({
    "event": st.sampled_from(["", "message", "dropped", "x-y"]),
    "data": st.lists(LINE, min_size=1, max_size=4),
    "id": st.one_of(st.none(), st.text("abc:0123456789", max_size=6)),
    "comment": st.one_of(st.none(), LINE),
}), max_size=5)


@PROPERTIES
@given(events=SSE_EVENTS, data=st.data())
def test_the_event_stream_reader_takes_any_chunking_and_line_ends(page: Any, events: list[dict[str, Any]],
                                                                  data: st.DataObject) -> None:
    lines: list[str] = []
    expected = []
    last_id = ""
    for event in events:
        if event["comment"] is not None:
            lines.append(":" + event["comment"])
        if event["event"]:
            lines.append("event:" + data.draw(st.sampled_from(["", " "])) + event["event"])
        if event["id"] is not None:
            lines.append("id: " + event["id"])
            last_id = event["id"]
        for line in event["data"]:
            space = " " if line.startswith(" ") else data.draw(st.sampled_from(["", " "]))
            lines.append("data:" + space + line)
        lines.append("")
        expected.append({"event": event["event"] or "message", "data": "\n".join(event["data"]), "id": last_id})
    text = ""
    for line in lines:
        end = data.draw(st.sampled_from(["\n", "\r\n", "\r"]))
        if text.endswith("\r") and line == "":
            text = text[:-1] + "\r\n"  # a CR then an empty line's LF would be one CRLF
        text += line + end
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=6))
    if data.draw(st.booleans()):  # a chunk that ends between the CR and the LF of a line end
        cuts += [i + 1 for i, c in enumerate(text) if c == "\r"]
    cuts = sorted(set(cuts))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    got = core(page, "const p = new core.SseParser(); return arguments[0].flatMap((c) => p.feed(c));", chunks)
    assert got == expected


FILTERS = st.fixed_dictionaries({
    "unit": st.lists(TEXT.filter(bool), max_size=2), "host": st.lists(TEXT.filter(bool), max_size=2),
    "source": st.lists(TEXT.filter(bool), max_size=2), "priority": TEXT, "since": TEXT, "until": TEXT,
    "grep": TEXT, "matches": st.lists(st.tuples(st.from_regex(r"[A-Z0-9_]{1,8}", fullmatch=True), TEXT),
                                      max_size=2),
    "n": st.one_of(st.just(0), st.integers(1, 10_000)),
})


@PROPERTIES
@given(filters=FILTERS)
def test_the_filters_go_into_the_url_and_come_back(page: Any, filters: dict[str, Any]) -> None:
    search, back = core(page, "const s = core.searchFromFilters(arguments[0]);"
                              "return [s, core.filtersFromSearch('?' + s)];", filters)
    pairs = [(name, v) for name in ("unit", "host", "source") for v in filters[name]]
    pairs += [(name, filters[name]) for name in ("priority", "since", "until", "grep") if filters[name]]
    pairs += [tuple(m) for m in filters["matches"]] + ([("n", str(filters["n"]))] if filters["n"] else [])
    assert urllib.parse.parse_qsl(search, keep_blank_values=True) == pairs
    assert back == {**filters, "matches": [list(m) for m in filters["matches"]]}


LITERAL_PIECE = st.tuples(st.sampled_from("abAB"), st.sampled_from(["", "+", "?"]))


@PROPERTIES
@given(pieces=st.lists(LITERAL_PIECE, min_size=1, max_size=3), text=st.text("abAB x", max_size=30),
       group=st.booleans())
def test_grep_hits_are_marked_where_the_pattern_matches(page: Any, pieces: list[tuple[str, str]],
                                                        text: str, group: bool) -> None:
    if all(q == "?" for _, q in pieces):
        pieces = [(pieces[0][0], ""), *pieces[1:]]  # a pattern that cannot match the empty string
    pattern = "".join(c + q for c, q in pieces)
    if group:  # Python's syntax of a named group, as `hostlog query -g` takes it
        pattern = f"(?P<hit>{pattern})"
    segments = core(page, "return core.highlightSegments(arguments[1], core.grepRegex(arguments[0]));",
                    pattern, text)
    assert "".join(s["text"] for s in segments) == text
    flags = 0 if any(c.isupper() for c in pattern) else re.IGNORECASE  # journalctl's case rule
    assert [s["text"] for s in segments if s["hit"]] == [m[0] for m in re.finditer(pattern, text, flags)]


@st.composite
def bin_edges(draw: st.DrawFn) -> tuple[list[tuple[int, int]], int]:
    """Points on the edges of the bins (the range fixed so that the width is
    known), where a floating-point division would put them in the wrong bin."""
    bins = draw(st.integers(1, 80))
    width = draw(st.integers(1, (2**53 - 1) // bins))
    low = draw(st.integers(0, 2**53 - 1 - bins * width))
    ks = draw(st.lists(st.integers(1, bins - 1), max_size=10)) if bins > 1 else []
    inner = [low + k * width + d for k in ks for d in (-1, 0)]
    return [(us, draw(st.integers(0, 4))) for us in [low, low + bins * width - 1, *inner]], bins


@PROPERTIES
@given(case=st.one_of(st.tuples(st.lists(st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 4)), max_size=40),
                                st.integers(1, 80)), bin_edges()))
def test_the_histogram_bins_hold_every_record_once(page: Any, case: tuple[list[tuple[int, int]], int]) -> None:
    points, bins = case
    got = core(page, "return core.binCounts(arguments[0], arguments[1]);", points, bins)
    counts = got["counts"]
    assert len(counts) == bins
    assert sum(map(sum, counts)) == len(points)
    if not points:
        return
    low, width = got["from"], got["width"]
    assert low == min(us for us, _ in points) and got["to"] == max(us for us, _ in points)
    assert width * bins >= got["to"] - low + 1
    expected = [[0] * 5 for _ in range(bins)]
    for us, group in points:
        expected[min(bins - 1, (us - low) // width)][group] += 1
    assert counts == expected


MIN_US = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
    microseconds=1)
MAX_US = (dt.datetime(2191, 1, 1, tzinfo=dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
    microseconds=1) - 1


@PROPERTIES
@given(ns=st.lists(st.integers(MIN_US * 1000, MAX_US * 1000 + 999), min_size=1, max_size=10))
def test_times_are_read_and_written_to_the_microsecond(page: Any, ns: list[int]) -> None:
    stamps = [record_json(Record(ts=t, msg=""), "n:1")["ts"] for t in ns]
    got = core(page, "return arguments[0].map((ts) => { const us = core.isoToMicros(ts);"
                     " return [us, core.formatStamp(us, true), core.timeSpec(us)]; });", stamps)
    for t, (us, stamp, spec) in zip(ns, got):
        assert us == t // 1000
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
        assert stamp == f"{MONTHS[when.month - 1]} " + when.strftime("%d %H:%M:%S") + f".{us % 1_000_000:06d}"
        if us >= 0:  # what the histogram gives --since/--until: the server reads the same instant
            assert parse_timestamp(spec, now_ns=0, utc=True) == us * 1000, spec


@PROPERTIES
@given(seqs=st.lists(st.integers(1, 2**50), max_size=20, unique=True), node=st.text("0123456789abcdef:", max_size=8))
def test_a_page_is_shown_in_spool_order(page: Any, seqs: list[int], node: str) -> None:
    records = [{"cursor": f"{node}:{seq}", "i": i} for i, seq in enumerate(seqs)]
    got = core(page, "return core.spoolOrder(arguments[0]).map((r) => r.cursor);", records)
    assert got == [f"{node}:{seq}" for seq in sorted(seqs)]
