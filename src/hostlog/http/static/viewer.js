// hostlog viewer (docs/viewer.md). One page, no build step: this file is what
// the browser runs. It asks the agent's API for the last records
// (GET api/v1/logs?n=500, JSON) and then follows the live tail
// (GET api/v1/tail, text/event-stream read with fetch so that the
// Authorization header can be sent), resuming from the last cursor after a
// reconnect. Record text is only ever put on the page as text.
"use strict";

(() => {
  // ---------------------------------------------------------------------------
  // The pure part: parsers and formats over strings, no DOM, no I/O.
  // (window.hostlogViewer.core: the browser test checks them with generated input.)

  const LEVELS = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
  /** the histogram's groups, most severe first; index = group number */
  const GROUPS = ["err", "warning", "notice", "info", "debug"];
  /** the filters of the form: the same parameter names as the API and `hostlog query` */
  const LIST_FILTERS = ["unit", "host", "source"];
  const TEXT_FILTERS = ["priority", "since", "until", "grep"];
  const FIELD_NAME = /^[A-Z0-9_]+$/;

  /** The histogram group of a syslog priority: err and worse, warning,
   * notice, info, debug. Anything that is not 0-7 counts as info, as
   * journalctl reads a bad PRIORITY. */
  function groupOf(priority) {
    const p = Number.isInteger(priority) && priority >= 0 && priority <= 7 ? priority : 6;
    return p <= 3 ? 0 : p - 3;
  }

  /** The CSS class of a record's line: the colours `hostlog query` uses on a
   * terminal; an info record of the kernel's audit transport is blue. */
  function levelClass(priority, fields) {
    const g = groupOf(priority);
    if (g === 3 && fields && fields._TRANSPORT === "audit") return "lvl-audit";
    return "lvl-" + GROUPS[g];
  }

  /**
   * Server-sent events (the HTML standard's "event stream interpretation"),
   * fed text as it arrives in chunks of any size: lines end with CRLF, LF or
   * CR (a CR at the end of one chunk and an LF at the start of the next are
   * one line end), `:` starts a comment, a blank line dispatches the event.
   * feed() returns the events completed by that chunk: {event, data, id}.
   */
  class SseParser {
    constructor() {
      this.buf = "";
      this.skipLF = false;
      this.data = [];
      this.event = "";
      this.lastId = "";
    }

    feed(text) {
      const out = [];
      let s = this.buf + text;
      let i = 0;
      if (this.skipLF && s.length > 0) {
        if (s[0] === "\n") i = 1;
        this.skipLF = false;
      }
      const eol = /\r\n|\r|\n/g;
      eol.lastIndex = i;
      let m;
      while ((m = eol.exec(s)) !== null) {
        const line = s.slice(i, m.index);
        i = m.index + m[0].length;
        if (m[0] === "\r" && i === s.length) this.skipLF = true;
        this._line(line, out);
      }
      this.buf = s.slice(i);
      return out;
    }

    _line(line, out) {
      if (line === "") {
        if (this.data.length) {
          out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
        }
        this.data = [];
        this.event = "";
        return;
      }
      if (line[0] === ":") return;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (name === "data") this.data.push(value);
      else if (name === "event") this.event = value;
      else if (name === "id" && !value.includes("\0")) this.lastId = value;
      // "retry" and unknown fields: ignored (the page has its own backoff)
    }
  }

  function emptyFilters() {
    return { unit: [], host: [], source: [], priority: "", since: "", until: "", grep: "", matches: [], n: 0 };
  }

  /** The filters of a URL query string (`?unit=a&unit=b&priority=err&_PID=1`). */
  function filtersFromSearch(search) {
    const f = emptyFilters();
    for (const [name, value] of new URLSearchParams(search)) {
      if (LIST_FILTERS.includes(name)) {
        if (value !== "") f[name].push(value);
      } else if (TEXT_FILTERS.includes(name)) {
        if (f[name] === "") f[name] = value;
      } else if (name === "n") {
        const n = Number.parseInt(value, 10);
        if (Number.isInteger(n) && n > 0 && String(n) === value) f.n = n;
      } else if (FIELD_NAME.test(name)) {
        f.matches.push([name, value]);
      }
    }
    return f;
  }

  /** The query string of filters (without `?`), in one canonical order:
   * the URL of the page, and the parameters of every API call. */
  function searchFromFilters(f) {
    const p = new URLSearchParams();
    for (const name of LIST_FILTERS) for (const v of f[name]) if (v !== "") p.append(name, v);
    for (const name of TEXT_FILTERS) if (f[name] !== "") p.append(name, f[name]);
    for (const [name, value] of f.matches) p.append(name, value);
    if (f.n) p.append("n", String(f.n));
    return p.toString();
  }

  /** Filters from the form's inputs: unit, host and source take several
   * names separated by spaces or commas (each becomes its own parameter, an
   * OR as `-u a -u b`); the others are taken as typed (grep: exactly). */
  function filtersFromForm(values, matches, n) {
    const f = emptyFilters();
    for (const name of LIST_FILTERS) {
      f[name] = String(values[name] || "").split(/[\s,]+/).filter((v) => v !== "");
    }
    f.priority = String(values.priority || "").trim();
    f.since = String(values.since || "").trim();
    f.until = String(values.until || "").trim();
    f.grep = String(values.grep || "");
    f.matches = matches ? matches.slice() : [];
    f.n = n || 0;
    return f;
  }

  /** A JavaScript RegExp for a `--grep` pattern (Python's syntax), with
   * journalctl's case rule: case-insensitive unless the pattern has an
   * upper-case letter. null when the browser cannot read it (the records
   * are still the server's choice; only the highlighting is lost). */
  function grepRegex(pattern, caseSensitive) {
    if (!pattern) return null;
    let source = pattern;
    let flags = "g";
    const cs = caseSensitive === undefined || caseSensitive === null ? /[\p{Lu}\p{Lt}]/u.test(pattern) : caseSensitive;
    if (source.startsWith("(?i)")) {
      source = source.slice(4);
      flags += "i";
    } else if (!cs) {
      flags += "i";
    }
    source = source.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>")
      .replace(/\\A/g, "^").replace(/\\Z/g, "$");
    for (const extra of ["u", ""]) {
      try {
        return new RegExp(source, flags + extra);
      } catch (e) {
        // the next variant, or no highlighting
      }
    }
    return null;
  }

  /** `text` cut into pieces: [{text, hit}], hits being the matches of `re`
   * (a global RegExp) that are not empty. The pieces put together are `text`. */
  function highlightSegments(text, re) {
    if (!re || !text) return [{ text, hit: false }];
    const out = [];
    let last = 0;
    re.lastIndex = 0;
    let guard = 0;
    let m;
    while ((m = re.exec(text)) !== null && guard++ < 10000) {
      if (m[0].length === 0) {
        re.lastIndex = m.index + 1;
        if (re.lastIndex > text.length) break;
        continue;
      }
      if (m.index > last) out.push({ text: text.slice(last, m.index), hit: false });
      out.push({ text: m[0], hit: true });
      last = m.index + m[0].length;
    }
    re.lastIndex = 0;
    if (last < text.length || out.length === 0) out.push({ text: text.slice(last), hit: false });
    return out;
  }

  const ISO = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$/;

  /** Microseconds since the epoch of an ISO stamp of the API
   * (`2026-12-03T13:19:26.123456Z`), exactly (an integer below 2**53); NaN
   * when it is not one. */
  function isoToMicros(ts) {
    const m = ISO.exec(ts || "");
    if (!m) return NaN;
    const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
    const frac = ((m[7] || "") + "000000").slice(0, 6);
    return ms * 1000 + Number(frac);
  }

  /** [milliseconds, microseconds within the second] of an integer of
   * microseconds, in integer arithmetic (us / 1000 in floating point can
   * round up to the next millisecond). */
  function splitMicros(us) {
    const rem = ((us % 1000) + 1000) % 1000;
    return [(us - rem) / 1000, pad(((us % 1e6) + 1e6) % 1e6, 6)];
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const pad = (n, w) => String(n).padStart(w, "0");

  /** The stamp of a line, `Dec 03 13:19:26.123456` (journalctl's
   * short-precise) in the browser's time zone, or in UTC. */
  function formatStamp(us, utc) {
    if (!Number.isFinite(us)) return "-";
    const [ms, micro] = splitMicros(us);
    const d = new Date(ms);
    if (utc) {
      return `${MONTHS[d.getUTCMonth()]} ${pad(d.getUTCDate(), 2)} ${pad(d.getUTCHours(), 2)}:` +
        `${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}.${micro}`;
    }
    return `${MONTHS[d.getMonth()]} ${pad(d.getDate(), 2)} ${pad(d.getHours(), 2)}:` +
      `${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${micro}`;
  }

  /** A time for --since/--until that the server reads exactly:
   * `YYYY-MM-DD HH:MM:SS.ffffff UTC` (systemd.time). */
  function timeSpec(us) {
    const [ms, micro] = splitMicros(us);
    const d = new Date(ms);
    return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)} ` +
      `${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}.${micro} UTC`;
  }

  /** Volume by level over [min, max] of `points` ([us, group] pairs, us an
   * integer): `bins` bins of equal width (an integer of microseconds, at
   * least 1), bin i covering [from + i*width, from + (i+1)*width). */
  function binCounts(points, bins) {
    const counts = [];
    for (let i = 0; i < bins; i++) counts.push(new Array(GROUPS.length).fill(0));
    let from = Infinity;
    let to = -Infinity;
    for (const [us] of points) {
      if (us < from) from = us;
      if (us > to) to = us;
    }
    if (!points.length) return { from: NaN, to: NaN, width: 1, counts };
    let width = Math.max(1, Math.ceil((to - from + 1) / bins));
    while (width * bins < to - from + 1) width++; // the division may have rounded down
    for (const [us, g] of points) {
      // exact for safe integers: (k*width - 1) / width never rounds up to k below 2**53
      counts[Math.min(bins - 1, Math.floor((us - from) / width))][g] += 1;
    }
    return { from, to, width, counts };
  }

  /** A field value of the API as text: {"base64": ...} for bytes that are
   * not UTF-8, a list for a repeated field (one row each). */
  function valueTexts(value) {
    if (Array.isArray(value)) return value.flatMap(valueTexts);
    if (value && typeof value === "object" && typeof value.base64 === "string") return ["base64:" + value.base64];
    if (value === null || value === undefined) return ["-"];
    return [String(value)];
  }

  /** The message of a record as shown on its line. */
  function messageText(message) {
    if (typeof message === "string") return message;
    if (message && typeof message === "object" && typeof message.base64 === "string") {
      const bytes = Math.floor((message.base64.replace(/=+$/, "").length * 3) / 4);
      return `[${bytes}B blob data]`;
    }
    return message === null || message === undefined ? "" : String(message);
  }

  /** JSON.parse, keeping `ts_ns` exact: nanoseconds since the epoch do not
   * fit a double, so its digits are kept as text (where the browser gives the
   * reviver the source text, as Chromium does). */
  function parseJson(text) {
    return JSON.parse(text, (key, value, context) =>
      key === "ts_ns" && typeof value === "number" && context && typeof context.source === "string"
        ? context.source : value);
  }

  /** The position of a cursor of this node's spool (`<node id>:<n>`): n,
   * or NaN. */
  function cursorSeq(cursor) {
    const m = /:(\d+)$/.exec(cursor || "");
    return m ? Number(m[1]) : NaN;
  }

  /** Records of a page in the order of the spool, oldest first, as the tail
   * goes on (a page is newest first with `grep`, as `hostlog query -n -g`). */
  function spoolOrder(records) {
    const keyed = records.map((rec, i) => [cursorSeq(rec.cursor), i, rec]);
    if (keyed.some(([seq]) => !Number.isFinite(seq))) return records.slice();
    keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return keyed.map(([, , rec]) => rec);
  }

  /** Where the tail goes on after a page: after its newest record, or after
   * the page's next_cursor when that is later (the positions between were
   * looked at and not selected: the tail need not read them again). */
  function resumePoint(records, nextCursor) {
    const last = records.length ? records[records.length - 1].cursor : null;
    if (!nextCursor) return last;
    if (!last) return nextCursor;
    const sameNode = last.replace(/:\d+$/, "") === String(nextCursor).replace(/:\d+$/, "");
    return sameNode && cursorSeq(nextCursor) > cursorSeq(last) ? nextCursor : last;
  }

  const core = {
    LEVELS, GROUPS, SseParser, groupOf, levelClass, filtersFromSearch, searchFromFilters, filtersFromForm,
    grepRegex, highlightSegments, isoToMicros, formatStamp, timeSpec, binCounts, valueTexts, messageText,
    parseJson, cursorSeq, spoolOrder, resumePoint,
  };

  // ---------------------------------------------------------------------------
  // The page.

  const KEY_STORE = "hostlog.key";
  const DEFAULT_N = 500;
  const MAX_ROWS = 5000; // lines kept on the page; older ones leave it (and the histogram)
  const MAX_PENDING = 5000; // records held while paused; past it the tail is left and resumed from a cursor
  const BINS = 60;
  const RENDER_MS = 40;

  const S = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    filters: emptyFilters(),
    gen: 0, // every (re)load starts a generation; what an older one fetched is dropped
    rows: [], // {el, rec, us, group}; rec null for a notice
    queue: [], // received, not yet on the page
    pending: [], // received while paused
    overflow: false,
    renderedCursor: null, // cursor of the last record on the page
    cursor: null, // cursor of the last record received (resume point)
    paused: false,
    abort: null,
    following: false,
    dropped: 0,
    renderTimer: 0,
    histTimer: 0,
    keyPrompt: null,
    selected: null,
    grep: null,
    status: "",
  };
  const rowOf = new WeakMap();
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, text) {
      super(text || `HTTP ${status}`);
      this.status = status;
    }
  }
  class Stale extends Error {}
  /** a line of the page's own between records (what the tail could not send) */
  class Notice {
    constructor(text, missed, count) {
      this.text = text;
      this.missed = missed || null; // {node, first, last, count}: positions the tail did not send
      this.count = count || 0; // records it stands for
    }
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "";
    S.status = text;
  }

  function recordCount() {
    let n = 0;
    for (const r of S.rows) if (r.rec) n++;
    return n;
  }

  function showState() {
    const n = recordCount();
    if (S.paused) {
      const more = S.overflow ? `more than ${MAX_PENDING}` : String(S.pending.length);
      setStatus(`paused · ${n} records · ${more} new`, "paused");
    } else if (S.following) {
      setStatus(`following · ${n} records` + (S.dropped ? ` · ${S.dropped} not sent (fell behind)` : ""));
    }
  }

  // -- the key ----------------------------------------------------------------

  function askKey(message, isError) {
    if (S.keyPrompt) return S.keyPrompt;
    S.keyPrompt = new Promise((resolve) => {
      const box = $("keybox");
      const form = $("keyform");
      const input = $("keyinput");
      $("keymsg").textContent = message;
      $("keymsg").className = isError ? "error" : "";
      box.hidden = false;
      input.value = "";
      input.focus();
      const submit = (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        form.removeEventListener("submit", submit);
        box.hidden = true;
        S.key = key;
        sessionStorage.setItem(KEY_STORE, key);
        S.keyPrompt = null;
        resolve();
      };
      form.addEventListener("submit", submit);
    });
    return S.keyPrompt;
  }

  /** A request to the API with the key; a 401 asks for a key (again) and
   * retries; any other refusal is an ApiError with the server's text. */
  async function api(path, params, accept, signal, gen) {
    for (let attempt = 0; attempt < 20; attempt++) {
      const headers = { Accept: accept };
      if (S.key) headers.Authorization = "Bearer " + S.key;
      const query = params.toString();
      const resp = await fetch(path + (query ? "?" + query : ""), {
        headers, signal, credentials: "omit", cache: "no-store",
      });
      if (gen !== S.gen) throw new Stale();
      if (resp.status === 401) {
        const refused = Boolean(S.key);
        S.key = "";
        sessionStorage.removeItem(KEY_STORE);
        setStatus("waiting for an API key");
        await askKey(refused ? "That key was refused (unknown or revoked). Another one:"
          : "This agent needs an API key with the read scope.", refused);
        if (gen !== S.gen) throw new Stale();
        continue;
      }
      if (!resp.ok) throw new ApiError(resp.status, (await resp.text()).trim());
      return resp;
    }
    throw new ApiError(401, "no key accepted");
  }

  function apiParams(extra) {
    const p = new URLSearchParams(searchFromFilters({ ...S.filters, n: 0 }));
    for (const [name, value] of Object.entries(extra || {})) if (value !== null && value !== "") p.set(name, value);
    return p;
  }

  // -- loading and following ----------------------------------------------------

  function stopStream() {
    if (S.abort) S.abort.abort();
    S.abort = null;
    S.following = false;
  }

  function clearRows() {
    $("log").replaceChildren();
    S.rows = [];
    S.queue = [];
    S.pending = [];
    S.overflow = false;
    S.dropped = 0;
    S.cursor = S.renderedCursor = null;
    closeDetails();
    drawHistogram();
  }

  async function load() {
    const gen = ++S.gen;
    stopStream();
    clearRows();
    S.grep = grepRegex(S.filters.grep);
    setStatus("loading");
    let body;
    try {
      const resp = await api("api/v1/logs", apiParams({ n: String(S.filters.n || DEFAULT_N) }),
        "application/json", undefined, gen);
      body = parseJson(await resp.text());
    } catch (e) {
      if (gen === S.gen && !(e instanceof Stale)) failed(e);
      return;
    }
    if (gen !== S.gen) return;
    const records = spoolOrder(Array.isArray(body.records) ? body.records : []);
    S.queue = S.queue.concat(records);
    render();
    S.cursor = S.renderedCursor = resumePoint(records, body.next_cursor);
    if (S.filters.until) {
      setStatus(`${recordCount()} records · until is set: not following`);
      return;
    }
    follow(gen);
  }

  function failed(e) {
    let what = `cannot reach the agent (${e.message})`;
    if (e instanceof ApiError) what = e.message.startsWith(String(e.status)) ? e.message : `${e.status}: ${e.message}`;
    setStatus(what, "error");
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function follow(gen) {
    let backoff = 500;
    for (let attempt = 0; gen === S.gen; attempt++) {
      const ctl = new AbortController();
      S.abort = ctl;
      try {
        const resp = await api("api/v1/tail", apiParams({ cursor: S.cursor }), "text/event-stream", ctl.signal, gen);
        S.following = true;
        showState();
        backoff = 500;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = new SseParser();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.feed(value)) {
            if (ctl.signal.aborted) break; // left (paused too long): the rest comes again from the cursor
            onEvent(event);
          }
          if (gen !== S.gen || ctl.signal.aborted) break;
        }
        S.following = false;
        if (gen !== S.gen || ctl.signal.aborted) return;
      } catch (e) {
        S.following = false;
        if (gen !== S.gen || e instanceof Stale || ctl.signal.aborted) return;
        if (e instanceof ApiError && [400, 403, 404, 405, 406].includes(e.status)) {
          failed(e);
          return;
        }
        setStatus(e instanceof ApiError ? `${e.status}: ${e.message}` : "connection lost", "error");
      }
      await sleep(backoff);
      if (gen !== S.gen) return;
      setStatus(`reconnecting (${attempt + 1})`);
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  function onEvent(event) {
    if (event.event === "message" || event.event === "record") {
      let rec;
      try {
        rec = parseJson(event.data);
      } catch (e) {
        deliver(new Notice(`-- a tail event that is not JSON: ${event.data.slice(0, 200)} --`));
        return;
      }
      if (!rec || typeof rec !== "object" || !("cursor" in rec)) return;
      S.cursor = rec.cursor;
      deliver(rec);
    } else if (event.event === "dropped") {
      let info = {};
      try {
        info = JSON.parse(event.data);
      } catch (e) {
        info = {};
      }
      const count = Number(info.dropped ?? info.count ?? NaN);
      if (Number.isFinite(count)) S.dropped += count;
      const about = info.exact === false ? "about " : "";
      const first = cursorSeq(info.first_cursor);
      const last = cursorSeq(info.last_cursor);
      const node = String(info.first_cursor || "").replace(/:\d+$/, "");
      const readable = Number.isFinite(count) && count <= MAX_ROWS && first >= 1 && last >= first;
      const missed = readable ? { node, first, last, count } : null;
      deliver(new Notice(Number.isFinite(count)
        ? `-- ${about}${count} records not sent here: this viewer fell behind ` +
          "(the agent does not wait for a reader). " +
          (readable ? "Click to read them. --" : "Read them with hostlog query or api/v1/logs. --")
        : `-- records not sent here: this viewer fell behind (${event.data.slice(0, 200)}) --`, missed,
      Number.isFinite(count) ? count : 0));
    }
  }

  /** A record or notice from the tail: onto the page soon, or held while paused. */
  function deliver(item) {
    if (S.paused) {
      if (S.pending.length >= MAX_PENDING) {
        // too much to hold: leave the tail, and resume from the page's last record later
        S.overflow = true;
        S.pending = [];
        S.cursor = S.renderedCursor;
        S.dropped = S.rows.reduce((sum, row) => sum + (row.count || 0), 0); // those held are read again
        stopStream();
      } else if (!S.overflow) {
        S.pending.push(item);
      }
      showState();
      return;
    }
    S.queue.push(item);
    scheduleRender();
  }

  function scheduleRender() {
    if (S.renderTimer) return;
    S.renderTimer = setTimeout(() => {
      S.renderTimer = 0;
      render();
      showState();
    }, RENDER_MS);
  }

  function flushQueue() {
    if (S.renderTimer) {
      clearTimeout(S.renderTimer);
      S.renderTimer = 0;
    }
    render();
  }

  // -- lines --------------------------------------------------------------------

  function makeRow(rec) {
    const us = isoToMicros(rec.ts);
    const group = groupOf(rec.priority);
    const el = document.createElement("div");
    el.className = "row " + levelClass(rec.priority, rec.fields);
    el.dataset.cursor = rec.cursor || "";
    el.dataset.level = GROUPS[group];
    const head = document.createElement("span");
    head.className = "head";
    const stamp = document.createElement("span");
    stamp.className = "ts";
    stamp.textContent = formatStamp(us, false);
    stamp.title = rec.ts || "";
    const who = rec.identifier || rec.unit || "unknown";
    const pid = rec.pid !== null && rec.pid !== undefined && rec.pid !== "" ? `[${rec.pid}]` : "";
    head.append(stamp, ` ${rec.host ? rec.host + " " : ""}${who}${pid}: `);
    const msg = document.createElement("span");
    msg.className = "msg";
    for (const piece of highlightSegments(messageText(rec.message), S.grep)) {
      if (piece.hit) {
        const mark = document.createElement("mark");
        mark.textContent = piece.text;
        msg.append(mark);
      } else {
        msg.append(piece.text);
      }
    }
    el.append(head, msg);
    const row = { el, rec, us, group };
    rowOf.set(el, row);
    return row;
  }

  function noticeRow(notice) {
    const el = document.createElement("div");
    el.className = "notice" + (notice.missed ? " missed" : "");
    el.textContent = notice.text;
    const row = { el, rec: null, us: NaN, group: -1, missed: notice.missed, count: notice.count, loading: false };
    rowOf.set(el, row);
    return row;
  }

  /** The records a dropped notice stands for, read by paging the API after
   * the position before them, put where the notice was. */
  async function readMissed(row) {
    if (row.loading || !row.missed) return;
    row.loading = true;
    const gen = S.gen;
    const { node, first, last, count } = row.missed;
    row.el.textContent = `-- reading ${count} records --`;
    const got = [];
    let after = first - 1;
    try {
      for (let page = 0; page < 100 && after < last; page++) {
        const resp = await api("api/v1/logs", apiParams({ cursor: `${node}:${after}`, limit: "1000" }),
          "application/json", undefined, gen);
        const recs = spoolOrder(parseJson(await resp.text()).records || []);
        if (!recs.length) break;
        for (const rec of recs) if (cursorSeq(rec.cursor) <= last) got.push(rec);
        const end = cursorSeq(recs[recs.length - 1].cursor);
        if (!(end > after)) break;
        after = end;
      }
    } catch (e) {
      if (gen !== S.gen || e instanceof Stale) return;
      row.loading = false;
      row.el.textContent = `-- ${count} records not sent here; reading them failed: ${e.message} --`;
      return;
    }
    if (gen !== S.gen) return;
    const i = S.rows.indexOf(row);
    if (i < 0) return;
    const rows = got.map(makeRow);
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.append(r.el);
    row.el.replaceWith(frag);
    S.rows = S.rows.slice(0, i).concat(rows, S.rows.slice(i + 1));
    if (S.rows.length > MAX_ROWS) {
      for (const old of S.rows.splice(0, S.rows.length - MAX_ROWS)) old.el.remove();
    }
    S.dropped = Math.max(0, S.dropped - row.count);
    scheduleHistogram();
    showState();
  }

  function render() {
    if (!S.queue.length) return;
    const items = S.queue.length > MAX_ROWS ? S.queue.slice(-MAX_ROWS) : S.queue;
    S.queue = [];
    appendRows(items.map((item) => (item instanceof Notice ? noticeRow(item) : makeRow(item))));
    for (let i = items.length - 1; i >= 0; i--) {
      if (!(items[i] instanceof Notice)) {
        S.renderedCursor = items[i].cursor;
        break;
      }
    }
  }

  function appendRows(rows) {
    const log = $("log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const frag = document.createDocumentFragment();
    for (const row of rows) frag.append(row.el);
    log.append(frag);
    S.rows.push(...rows);
    if (S.rows.length > MAX_ROWS) {
      for (const old of S.rows.splice(0, S.rows.length - MAX_ROWS)) old.el.remove();
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
    scheduleHistogram();
  }

  // -- the histogram ------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function scheduleHistogram() {
    if (S.histTimer) return;
    S.histTimer = setTimeout(() => {
      S.histTimer = 0;
      drawHistogram();
    }, 100);
  }

  function drawHistogram() {
    const svg = $("histogram");
    const points = [];
    for (const r of S.rows) if (r.rec && Number.isFinite(r.us)) points.push([r.us, r.group]);
    const { from, to, width, counts } = binCounts(points, BINS);
    const nodes = [];
    const max = Math.max(1, ...counts.map((c) => c.reduce((a, b) => a + b, 0)));
    const W = 1000 / BINS;
    const H = 60;
    counts.forEach((c, i) => {
      let y = H;
      // least severe at the bottom, errors on top where the eye goes
      for (let g = GROUPS.length - 1; g >= 0; g--) {
        if (!c[g]) continue;
        const h = (c[g] / max) * (H - 2);
        y -= h;
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", (i * W + 0.5).toFixed(2));
        rect.setAttribute("width", (W - 1).toFixed(2));
        rect.setAttribute("y", y.toFixed(2));
        rect.setAttribute("height", h.toFixed(2));
        rect.setAttribute("class", "bar g-" + GROUPS[g]);
        rect.dataset.bin = String(i);
        rect.dataset.count = String(c[g]);
        nodes.push(rect);
      }
      const total = c.reduce((a, b) => a + b, 0);
      if (total) {
        const hit = document.createElementNS(SVG, "rect");
        hit.setAttribute("x", (i * W).toFixed(2));
        hit.setAttribute("width", W.toFixed(2));
        hit.setAttribute("y", "0");
        hit.setAttribute("height", String(H));
        hit.setAttribute("class", "bin-hit");
        const start = from + i * width;
        const end = Math.min(to, start + width - 1);
        hit.dataset.since = timeSpec(start);
        hit.dataset.until = timeSpec(end);
        const title = document.createElementNS(SVG, "title");
        const parts = GROUPS.map((g, k) => (c[k] ? `${c[k]} ${g}` : "")).filter(Boolean).join(", ");
        title.textContent = `${formatStamp(start)} – ${formatStamp(end)}: ${total} (${parts}); click to show only these`;
        hit.append(title);
        nodes.push(hit);
      }
    });
    svg.replaceChildren(...nodes);
    const totals = GROUPS.map((_, g) => counts.reduce((a, c) => a + c[g], 0));
    const legend = $("legend");
    legend.replaceChildren(...GROUPS.map((g, k) => {
      const span = document.createElement("span");
      span.className = "g-" + g;
      span.dataset.level = g;
      span.dataset.count = String(totals[k]);
      span.textContent = `${g === "err" ? "err+" : g} ${totals[k]}`;
      return span;
    }));
    $("hist-from").textContent = points.length ? formatStamp(from) : "";
    $("hist-to").textContent = points.length ? formatStamp(to) : "";
  }

  // -- a record's fields ---------------------------------------------------------

  const TOP = ["message", "ts", "ts_ns", "level", "priority", "host", "unit", "identifier", "pid", "source", "cursor"];

  function detailRow(tbody, name, value, cls) {
    const texts = valueTexts(value);
    for (const text of texts) {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      const th = document.createElement("th");
      th.textContent = name;
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(th, td);
      tbody.append(tr);
    }
  }

  function showDetails(row) {
    if (S.selected) S.selected.el.classList.remove("selected");
    S.selected = row;
    row.el.classList.add("selected");
    const rec = row.rec;
    const tbody = $("details-table").tBodies[0];
    tbody.replaceChildren();
    const section = (title) => {
      const tr = document.createElement("tr");
      tr.className = "section";
      const th = document.createElement("th");
      th.colSpan = 2;
      th.textContent = title;
      tr.append(th);
      tbody.append(tr);
    };
    section("record");
    for (const name of TOP) if (name in rec) detailRow(tbody, name, rec[name]);
    const tags = Object.keys(rec).filter((k) => !TOP.includes(k) && k !== "fields").sort();
    if (tags.length) {
      section("tags");
      for (const name of tags) detailRow(tbody, name, rec[name]);
    }
    const fields = rec.fields && typeof rec.fields === "object" ? rec.fields : {};
    section(`fields (${Object.keys(fields).length})`);
    for (const name of Object.keys(fields).sort()) detailRow(tbody, name, fields[name], "field");
    $("details-title").textContent = `${rec.level || ""} · ${rec.ts || ""}`;
    $("details").hidden = false;
  }

  function closeDetails() {
    if (S.selected) S.selected.el.classList.remove("selected");
    S.selected = null;
    const box = $("details");
    if (box) box.hidden = true;
  }

  // -- pause, filters, the URL ---------------------------------------------------------

  function pauseButton(paused) {
    S.paused = paused;
    const button = $("pause");
    button.textContent = paused ? "resume" : "pause";
    button.setAttribute("aria-pressed", String(paused));
  }

  function setPaused(paused) {
    pauseButton(paused);
    if (!paused) {
      if (S.overflow) {
        S.overflow = false;
        S.pending = [];
        S.cursor = S.renderedCursor;
        if (!S.filters.until) follow(S.gen);
      } else if (S.pending.length) {
        S.queue = S.queue.concat(S.pending);
        S.pending = [];
        flushQueue();
      }
      if (!S.following) setStatus(`${recordCount()} records`);
    }
    showState();
  }

  function fillForm(f) {
    const form = $("filters");
    for (const name of LIST_FILTERS) form.elements[name].value = f[name].join(" ");
    for (const name of ["since", "until", "grep"]) form.elements[name].value = f[name];
    const select = form.elements.priority;
    if (f.priority && ![...select.options].some((o) => o.value === f.priority)) {
      const option = document.createElement("option");
      option.value = option.textContent = f.priority;
      select.append(option);
    }
    select.value = f.priority;
    $("matches").textContent = f.matches.length ? "matches: " + f.matches.map(([k, v]) => `${k}=${v}`).join(" ") : "";
  }

  function readForm() {
    const form = $("filters");
    const values = {};
    for (const name of [...LIST_FILTERS, ...TEXT_FILTERS]) values[name] = form.elements[name].value;
    return filtersFromForm(values, S.filters.matches, S.filters.n);
  }

  function apply(filters, push) {
    S.filters = filters;
    const search = searchFromFilters(filters);
    if (push) history.pushState(null, "", search ? "?" + search : location.pathname);
    fillForm(filters);
    pauseButton(false);
    load();
  }

  function start() {
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      apply(readForm(), true);
    });
    $("clear").addEventListener("click", () => apply(emptyFilters(), true));
    $("pause").addEventListener("click", () => setPaused(!S.paused));
    $("forget").addEventListener("click", () => {
      S.key = "";
      sessionStorage.removeItem(KEY_STORE);
      load();
    });
    $("log").addEventListener("click", (event) => {
      const el = event.target.closest(".row, .notice.missed");
      const row = el && rowOf.get(el);
      if (row && row.rec) showDetails(row);
      else if (row && row.missed) readMissed(row);
    });
    $("details-close").addEventListener("click", closeDetails);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeDetails();
    });
    $("histogram").addEventListener("click", (event) => {
      const hit = event.target.closest("rect.bin-hit");
      if (!hit) return;
      apply({ ...S.filters, since: hit.dataset.since, until: hit.dataset.until }, true);
    });
    window.addEventListener("popstate", () => apply(filtersFromSearch(location.search), false));
    apply(filtersFromSearch(location.search), false);
  }

  window.hostlogViewer = { core, state: S };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
