"""An online, Drain-style template miner: message in, pattern id and template out.

Pure and sans-IO: ``Miner`` holds its state in memory; ``to_bytes`` and
``Miner.from_bytes`` turn it into bytes and back, and the caller stores them
(with an atomic replace). Not thread-safe: one miner per thread, or a lock.
docs/patterns.md describes the algorithm and its accuracy; in short:

1. The message (a line with its header set aside) is masked
   (``hostlog.patterns.masks``: numbers, IPs, paths ... become typed
   placeholders) and split on whitespace into tokens.
2. A fixed-depth prefix tree routes it: on its number of tokens, then on its
   first ``depth`` tokens (a token holding a digit routes as ``<*>``). The
   node reached holds the candidate patterns ("clusters"). If none fits, the
   patterns of the same length that end with the same token are tried too,
   so a message whose first word varies still finds its pattern.
3. A pattern fits when at least ``similarity`` of the positions agree (a
   ``<*>`` agrees with anything) and no word contradicts it: a plain word
   (no digit, no ``.``/``/`` inside, not a placeholder) replaced by another
   plain word is allowed only in a young pattern (fewer than ``trust_after``
   messages) and only when it is the one difference. A word that has
   repeated is wording, not a parameter: "state Active" and "state Inactive"
   stay two patterns once either has been seen twice. The best fit wins
   (most agreeing positions, then most ``<*>``, then the oldest).
4. The message joins that pattern, whose template turns the positions that
   differ into ``<*>``, or it starts a new pattern.

Pattern ids. A pattern's id is fixed when the pattern is created: the first
16 hex digits of BLAKE2b(app NUL template-at-creation). When the template
generalises later (a token becomes ``<*>``), the id stays; every record of a
pattern carries one id, before and after a restart (the state keeps the ids
and the templates) and in forwarded data; ``Match.template`` is the current
template. Two miners that saw the same first message of a pattern give it
the same id, and a pattern evicted and seen again with the same first message
gets its old id back. A new pattern whose id is taken by a live pattern of the
app (that began with the same template) joins that pattern instead.

Bounds. At most ``max_clusters`` patterns per app (the least recently used
is evicted, and the branch of the tree it leaves empty is pruned) and
``max_apps`` apps (the least recently used app is dropped whole); a message
is cut to ``max_tokens`` tokens (the rest becomes one ``<*>``), and a token of
more than ``MAX_TOKEN_CHARS`` characters is a ``<*>``. Two caches, each of at
most ``cache_size`` entries for all apps together (and none for messages of
more than ``CACHED_CHARS`` characters), make the common case cheap: messages
already seen (raw and masked) -> their pattern, and the "skeleton" of a
message (its digits 1-9 made 1) -> its masked form. Both are only shortcuts:
a cached pattern is used only while nothing changed that could send the
message elsewhere. An entry holds a node and that node's version: the leaf
the pattern was found in (its version moves when a pattern of the leaf is
created, generalised or evicted, or when a new sibling branch takes over
messages that were routed through ``<*>``), or, for a pattern found by the
fallback, the root of the length (whose version moves with any change there).
So a miner restored from its state, with empty caches, assigns exactly the ids
the original would have.

State. ``to_bytes`` writes a versioned msgpack document of plain data
(strings, integers, lists, maps) behind a magic number and a BLAKE2b
checksum; ``from_bytes`` checks the checksum, validates every field and
invariant while it builds the miner, and raises ``PatternStateError`` for any
damage. Loading runs no code from the state.
"""
from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

import msgpack

from hostlog.errors import HostlogError
from hostlog.patterns.masks import MASKS_VERSION, PLACEHOLDERS, mask

__all__ = ["WILDCARD", "Match", "Miner", "PatternStateError", "Settings"]

WILDCARD: Final = "<*>"

#: A longer token (a blob, a dump) is a parameter: it becomes <*> in the template.
MAX_TOKEN_CHARS: Final = 256
#: Longer messages are not cached: the caches' memory is bounded in bytes too.
CACHED_CHARS: Final = 512

STATE_MAGIC: Final = b"HLPT"
STATE_VERSION: Final = 1
_DIGEST_SIZE: Final = 16
_MAX_COUNT: Final = 2**62  # counters in a state: room to grow within msgpack's 64 bits

_HAS_DIGIT: Final = re.compile(r"\d")
# A token that names something rather than says something: it holds a digit,
# or a '.' or '/' between word characters (org.apache.Foo, a/b, host.example).
_NOT_A_WORD: Final = re.compile(r"\d|\w[./]\w")
_ID_RE: Final = re.compile(r"[0-9a-f]{16}")
_HAS_1_TO_9: Final = re.compile(r"[1-9]")
_SKELETON: Final = bytes.maketrans(b"123456789", b"111111111")


class PatternStateError(HostlogError):
    """A miner state that cannot be loaded: damaged, truncated, of another
    version or made with other masks; the message says which."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How the miner matches and how much it keeps. Saved with the state."""

    depth: int = 2  # leading tokens the prefix tree routes on
    similarity: float = 0.7  # least share of positions that must agree
    trust_after: int = 2  # a pattern's words are fixed once it has this many messages
    max_children: int = 100  # children per tree node; more go to the <*> child
    max_clusters: int = 1000  # patterns per app (LRU)
    max_apps: int = 1000  # apps (LRU)
    max_tokens: int = 256  # tokens per message; the rest becomes one <*>
    cache_size: int = 16384  # entries of each cache, all apps together

    def __post_init__(self) -> None:
        checks = (
            (1 <= self.depth <= 16, "depth must be 1..16"),
            (0.0 < self.similarity <= 1.0, "similarity must be in (0, 1]"),
            (1 <= self.trust_after <= 1_000_000, "trust_after must be 1..1000000"),
            (2 <= self.max_children <= 100_000, "max_children must be 2..100000"),
            (1 <= self.max_clusters <= 10_000_000, "max_clusters must be 1..10000000"),
            (1 <= self.max_apps <= 1_000_000, "max_apps must be 1..1000000"),
            (2 <= self.max_tokens <= 100_000, "max_tokens must be 2..100000"),
            (0 <= self.cache_size <= 10_000_000, "cache_size must be 0..10000000"),
        )
        for ok, what in checks:
            if not ok:
                raise ValueError(what)


@dataclass(frozen=True, slots=True)
class Match:
    """Where a message went: its pattern's id and current template, and
    whether this message created the pattern."""

    pattern_id: str
    template: str
    new: bool


def pattern_id(app: str, template: str) -> str:
    """The id a pattern of ``app`` gets when it is created with ``template``."""
    data = f"{app}\0{template}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class _Node:
    """A node of the prefix tree; the clusters sit in the nodes at the bottom."""

    __slots__ = ("children", "clusters", "version")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.clusters: list[_Cluster] = []
        # bumped by every change that can move a message cached under this node:
        # in a leaf, a change of its clusters or of the routing to it; in the root
        # of a length, any change among the clusters of that length
        self.version = 0


class _Cluster:
    __slots__ = ("id", "seq", "tokens", "size", "path", "suffix", "match", "root", "leaf")

    def __init__(self, cid: str, seq: int, tokens: list[str], size: int,
                 path: tuple[str, ...], suffix: str, root: _Node, leaf: _Node) -> None:
        self.id = cid
        self.seq = seq  # creation order within the app: the oldest wins a tie
        self.tokens = tokens  # the template
        self.size = size  # messages seen
        self.path = path  # the tree keys it was filed under (fixed at creation)
        self.suffix = suffix  # the key of its last token, for the fallback search
        self.match = Match(cid, " ".join(tokens), False)
        self.root = root  # the root of its length
        self.leaf = leaf  # the node it is filed in


class _App:
    """One app's patterns: the tree, the LRU of clusters, the cache."""

    __slots__ = ("root", "by_suffix", "clusters", "cache", "masked", "seq")

    def __init__(self) -> None:
        self.root: dict[int, _Node] = {}  # by number of tokens
        self.by_suffix: dict[tuple[int, str], list[_Cluster]] = {}
        self.clusters: OrderedDict[str, _Cluster] = OrderedDict()  # least recently used first
        # message -> (cluster, guard node, the guard's version then), valid while
        # that version holds; the same for masked messages, apart (a raw message
        # may read like another's masked form and still mask to something else)
        self.cache: dict[str, tuple[_Cluster, _Node, int]] = {}
        self.masked: dict[str, tuple[_Cluster, _Node, int]] = {}
        self.seq = 0  # clusters ever created


def _key(token: str) -> str:
    """The tree key of a token: tokens holding a digit all route as <*>."""
    return WILDCARD if _HAS_DIGIT.search(token) else token


def _bump_leaves(node: _Node) -> None:
    """Invalidate the cache entries guarded by the leaves under ``node``."""
    node.version += 1
    for child in node.children.values():
        _bump_leaves(child)


def _is_word(token: str) -> bool:
    return token not in PLACEHOLDERS and token != WILDCARD and _NOT_A_WORD.search(token) is None


class Miner:
    """The template miner for any number of apps (see the module's docstring)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._apps: OrderedDict[str, _App] = OrderedDict()
        self._cached = 0  # entries in all the apps' caches
        self._masks: dict[bytes, str] = {}  # skeleton -> masked message

    # -- matching ---------------------------------------------------------

    def add(self, app: str, message: str) -> Match:
        """File ``message`` (a message without its header) under a pattern of ``app``."""
        return self.add_many(app, (message,))[0]

    def add_many(self, app: str, messages: Iterable[str]) -> list[Match]:
        """``add`` for each message in turn, with the per-call work done once."""
        # The loop is the hot path: names are bound once, the common cases inlined.
        state = self._app(app)
        cache = state.cache
        get = cache.get
        by_masked = state.masked
        masked_of = self._masks.get
        limit = self.settings.cache_size
        touch = state.clusters.move_to_end
        out: list[Match] = []
        append = out.append
        for message in messages:
            hit = get(message)
            if hit is None or hit[1].version != hit[2]:
                masked = masked_of(message.encode("utf-8", "surrogatepass").translate(_SKELETON))
                if masked is None:
                    masked = self._mask(message)
                hit = by_masked.get(masked)
                if hit is None or hit[1].version != hit[2]:
                    cluster, match, guard = self._place(app, state, masked)
                    hit = (cluster, guard, guard.version)
                    self._remember(by_masked, masked, hit)
                    self._remember(cache, message, hit)
                    if match.new:
                        append(match)
                        continue
                elif self._cached < limit and len(message) <= CACHED_CHARS:
                    cache[message] = hit  # counted even if it replaces a stale entry: the bound still holds
                    self._cached += 1
                else:
                    self._remember(cache, message, hit)
            cluster = hit[0]
            cluster.size += 1
            touch(cluster.id)
            append(cluster.match)
        return out

    def _remember(self, cache: dict[str, tuple[_Cluster, _Node, int]], key: str,
                  hit: tuple[_Cluster, _Node, int]) -> None:
        """Cache ``key``; the caches of all apps together hold at most ``cache_size`` entries."""
        if len(key) > CACHED_CHARS:
            return
        if self._cached >= self.settings.cache_size:
            for state in self._apps.values():
                state.cache.clear()
                state.masked.clear()
            self._cached = 0
            if not self.settings.cache_size:
                return
        self._cached += 1
        cache[key] = hit

    def _mask(self, message: str) -> str:
        """``mask(message)``, cached by the message's skeleton (its digits 1-9 all made '1').

        Every mask decides on character classes and on '0' (``0x``) only, so
        messages with one skeleton mask alike wherever a digit is masked; a
        result that still holds a digit 1-9 (``R02``) is not cached.
        """
        skeleton = message.encode("utf-8", "surrogatepass").translate(_SKELETON)
        masked = self._masks.get(skeleton)
        if masked is None:
            masked = mask(message)
            if _HAS_1_TO_9.search(masked) is None and self.settings.cache_size and len(message) <= CACHED_CHARS:
                if len(self._masks) >= self.settings.cache_size:
                    self._masks.clear()
                self._masks[skeleton] = masked
        return masked

    def _app(self, app: str) -> _App:
        apps = self._apps
        state = apps.get(app)
        if state is None:
            if len(apps) >= self.settings.max_apps:
                _, dropped = apps.popitem(last=False)
                self._cached -= len(dropped.cache) + len(dropped.masked)
            state = apps[app] = _App()
        else:
            apps.move_to_end(app)
        return state

    def _place(self, app: str, state: _App, masked: str) -> tuple[_Cluster, Match, _Node]:
        """The slow path: search the tree, then join the best pattern or create one.

        Returns the cluster, its Match (with ``new`` set for a new cluster; the
        caller counts the message and marks the cluster used) and the node whose
        version guards a cache entry for this message: the leaf the message is
        routed to when the cluster is there, else the root of its length.
        """
        s = self.settings
        tokens = [t if len(t) <= MAX_TOKEN_CHARS else WILDCARD for t in masked.split()]
        if len(tokens) > s.max_tokens:
            tokens[s.max_tokens - 1:] = [WILDCARD]
        n = len(tokens)
        suffix = _key(tokens[-1]) if tokens else ""
        best = None
        node = state.root.get(n)
        for token in tokens[:s.depth]:
            if node is None:
                break
            children = node.children
            node = children.get(_key(token)) or children.get(WILDCARD)
        if node is not None:
            best = self._best(node.clusters, tokens)
        if best is None:
            candidates = state.by_suffix.get((n, suffix), [])
            if suffix != WILDCARD:
                candidates = candidates + state.by_suffix.get((n, WILDCARD), [])
            best = self._best(candidates[:s.max_children], tokens)
        if best is None:
            return self._create(app, state, tokens, suffix)
        template = best.tokens
        if template != tokens:
            merged = [t if t == m else WILDCARD for t, m in zip(template, tokens)]
            if merged != template:
                best.tokens = merged
                best.match = Match(best.id, " ".join(merged), False)
                best.leaf.version += 1
                best.root.version += 1
        return best, best.match, best.leaf if best.leaf is node else best.root

    def _best(self, clusters: list[_Cluster], tokens: list[str]) -> _Cluster | None:
        """The cluster that fits ``tokens`` best, or None if none fits."""
        n = len(tokens)
        if not clusters:
            return None
        if n == 0:
            return clusters[0]
        s = self.settings
        allowed = n - _ceil(s.similarity * n)  # positions that may disagree
        trust_after = s.trust_after
        best: _Cluster | None = None
        best_agree = best_wild = -1
        for cluster in clusters:
            disagree = wild = words = 0
            words_fixed = cluster.size >= trust_after
            for t, m in zip(cluster.tokens, tokens):
                if t == m:
                    continue
                if t == WILDCARD:
                    wild += 1
                    continue
                if _is_word(t) and _is_word(m):
                    if words_fixed:
                        break  # a fixed word replaced: another pattern
                    words += 1
                disagree += 1
                if disagree > allowed:
                    break
            else:
                if words and disagree > 1:
                    continue  # a young pattern's word may vary only if nothing else does
                agree = n - disagree
                if agree > best_agree or agree == best_agree and wild > best_wild:
                    best, best_agree, best_wild = cluster, agree, wild
        return best

    def _create(self, app: str, state: _App, tokens: list[str], suffix: str) -> tuple[_Cluster, Match, _Node]:
        s = self.settings
        template = " ".join(tokens)
        cid = pattern_id(app, template)
        existing = state.clusters.get(cid)
        if existing is not None:
            # it began with this very template: the same pattern
            return existing, existing.match, existing.root
        if len(state.clusters) >= s.max_clusters:
            self._evict(state, state.clusters[next(iter(state.clusters))])
        n = len(tokens)
        node = root = state.root.get(n) or state.root.setdefault(n, _Node())
        path = [str(n)]
        for token in tokens[:s.depth]:
            key = _key(token)
            children = node.children
            if key not in children and len(children) >= s.max_children:
                key = WILDCARD
            child = children.get(key)
            if child is None:
                child = children[key] = _Node()
                if key != WILDCARD and WILDCARD in children:
                    # messages with this key went to <*> so far and now come here
                    _bump_leaves(children[WILDCARD])
            node = child
            path.append(key)
        cluster = _Cluster(cid, state.seq, list(tokens), 1, tuple(path), suffix, root, node)
        state.seq += 1
        node.clusters.append(cluster)
        state.by_suffix.setdefault((n, suffix), []).append(cluster)
        state.clusters[cid] = cluster
        node.version += 1
        root.version += 1
        return cluster, Match(cid, cluster.match.template, True), node

    def _evict(self, state: _App, cluster: _Cluster) -> None:
        del state.clusters[cluster.id]
        n = len(cluster.tokens)
        same_suffix = state.by_suffix[(n, cluster.suffix)]
        same_suffix.remove(cluster)
        if not same_suffix:
            del state.by_suffix[(n, cluster.suffix)]
        nodes = [state.root[n]]
        for key in cluster.path[1:]:
            nodes.append(nodes[-1].children[key])
        nodes[-1].clusters.remove(cluster)
        nodes[-1].version += 1
        # prune the branch that no cluster uses any more
        for depth in range(len(nodes) - 1, 0, -1):
            if nodes[depth].clusters or nodes[depth].children:
                break
            del nodes[depth - 1].children[cluster.path[depth]]
        else:
            if not nodes[0].children and not nodes[0].clusters:
                del state.root[n]
        nodes[0].version += 1

    # -- looking --------------------------------------------------------------

    def apps(self) -> list[str]:
        """The apps with patterns, least recently used first."""
        return list(self._apps)

    def patterns(self, app: str) -> dict[str, str]:
        """``{pattern id: template}`` of ``app``, least recently used first."""
        state = self._apps.get(app)
        if state is None:
            return {}
        return {cid: c.match.template for cid, c in state.clusters.items()}

    # -- state ----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state, for ``from_bytes``: magic, checksum, msgpack document."""
        doc = {
            "version": STATE_VERSION,
            "masks": MASKS_VERSION,
            "settings": asdict(self.settings),
            "apps": [
                [name, state.seq, [
                    [c.id, c.seq, min(c.size, _MAX_COUNT), c.tokens, list(c.path), c.suffix]
                    for c in state.clusters.values()
                ]]
                for name, state in self._apps.items()
            ],
        }
        payload: bytes = msgpack.packb(doc, use_bin_type=True, unicode_errors="surrogatepass")
        digest = hashlib.blake2b(payload, digest_size=_DIGEST_SIZE).digest()
        return STATE_MAGIC + bytes([STATE_VERSION]) + digest + payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Miner:
        """A miner in the state ``to_bytes`` wrote; ``PatternStateError`` if the bytes are not one."""
        return _load(data)


def _ceil(x: float) -> int:
    i = int(x)
    return i + 1 if x > i + 1e-9 else i


# -- loading, with validation of every field ------------------------------------


def _fail(what: str) -> PatternStateError:
    return PatternStateError(f"pattern state: {what}")


def _load(data: bytes) -> Miner:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _fail("not bytes")
    data = bytes(data)
    head = len(STATE_MAGIC) + 1 + _DIGEST_SIZE
    if len(data) < head or not data.startswith(STATE_MAGIC):
        raise _fail("not a hostlog pattern state (bad magic or truncated)")
    if data[len(STATE_MAGIC)] != STATE_VERSION:
        raise _fail(f"format version {data[len(STATE_MAGIC)]} is not {STATE_VERSION}")
    digest, payload = data[len(STATE_MAGIC) + 1:head], data[head:]
    if hashlib.blake2b(payload, digest_size=_DIGEST_SIZE).digest() != digest:
        raise _fail("checksum mismatch (damaged or truncated)")
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                              unicode_errors="surrogatepass")
    except Exception as exc:  # msgpack raises several types; all mean "not a state"
        raise _fail(f"undecodable: {exc}") from exc
    try:
        return _build(doc)
    except PatternStateError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _fail(f"invalid: {exc}") from exc


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise _fail(what)


def _is_int(v: object) -> bool:
    return type(v) is int


def _build(doc: Any) -> Miner:
    _expect(isinstance(doc, dict) and set(doc) == {"version", "masks", "settings", "apps"},
            "the document has the wrong keys")
    _expect(doc["version"] == STATE_VERSION, "document version mismatch")
    _expect(doc["masks"] == MASKS_VERSION, f"made with masks version {doc['masks']!r}, not {MASKS_VERSION}")
    raw_settings = doc["settings"]
    fields = Settings.__dataclass_fields__
    _expect(isinstance(raw_settings, dict) and set(raw_settings) == set(fields), "settings have the wrong keys")
    for name, value in raw_settings.items():
        if name == "similarity":
            _expect(type(value) is float or _is_int(value), "similarity is not a number")
        else:
            _expect(_is_int(value), f"setting {name} is not an integer")
    try:
        settings = Settings(**raw_settings)
    except ValueError as exc:
        raise _fail(f"settings: {exc}") from exc
    apps = doc["apps"]
    _expect(isinstance(apps, list) and len(apps) <= settings.max_apps, "apps is not a list within max_apps")
    miner = Miner(settings)
    for entry in apps:
        _expect(isinstance(entry, list) and len(entry) == 3, "an app entry is not [name, seq, clusters]")
        name, seq, clusters = entry
        _expect(isinstance(name, str), "an app name is not a string")
        _expect(name not in miner._apps, f"app {name!r} appears twice")
        _expect(_is_int(seq) and 0 <= seq <= _MAX_COUNT, f"app {name!r}: bad sequence number")
        _expect(isinstance(clusters, list) and len(clusters) <= settings.max_clusters,
                f"app {name!r}: clusters is not a list within max_clusters")
        miner._apps[name] = _build_app(name, seq, clusters, settings)
    return miner


def _build_app(name: str, seq: int, clusters: list[Any], s: Settings) -> _App:
    state = _App()
    state.seq = seq
    built: list[_Cluster] = []
    seqs: set[int] = set()
    for raw in clusters:
        where = f"app {name!r}, cluster {len(built)}"
        _expect(isinstance(raw, list) and len(raw) == 6, f"{where}: not [id, seq, size, tokens, path, suffix]")
        cid, cseq, size, tokens, path, suffix = raw
        _expect(isinstance(cid, str) and _ID_RE.fullmatch(cid) is not None, f"{where}: bad id")
        _expect(cid not in state.clusters, f"{where}: id {cid} appears twice")
        _expect(_is_int(cseq) and 0 <= cseq < seq and cseq not in seqs, f"{where}: bad sequence number")
        _expect(_is_int(size) and 1 <= size <= _MAX_COUNT, f"{where}: bad size")
        _expect(isinstance(tokens, list) and len(tokens) <= s.max_tokens
                and all(isinstance(t, str) and 0 < len(t) <= MAX_TOKEN_CHARS and t.split() == [t] for t in tokens),
                f"{where}: bad tokens")
        n = len(tokens)
        _expect(isinstance(path, list) and len(path) == 1 + min(s.depth, n) and path[0] == str(n)
                and all(isinstance(k, str) and k and k.split() == [k] for k in path), f"{where}: bad path")
        _expect(isinstance(suffix, str) and (suffix == "" if n == 0 else suffix.split() == [suffix]),
                f"{where}: bad suffix")
        n = len(tokens)
        root = state.root.get(n) or state.root.setdefault(n, _Node())
        cluster = _Cluster(cid, cseq, tokens, size, tuple(path), suffix, root, root)
        seqs.add(cseq)
        state.clusters[cid] = cluster
        built.append(cluster)
    # file them in creation order, as they were
    for cluster in sorted(built, key=lambda c: c.seq):
        n = len(cluster.tokens)
        node = cluster.root
        for key in cluster.path[1:]:
            child = node.children.get(key)
            if child is None:
                _expect(len(node.children) < s.max_children or key == WILDCARD,
                        f"app {name!r}: a tree node has more than max_children children")
                child = node.children[key] = _Node()
            node = child
        node.clusters.append(cluster)
        cluster.leaf = node
        state.by_suffix.setdefault((n, cluster.suffix), []).append(cluster)
    return state
