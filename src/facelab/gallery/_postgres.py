"""The PostgreSQL gallery backend (psycopg 3 + pgvector), for many processes and large galleries.

Embeddings live in one untyped ``vector`` column (canonical ``float32``, so collections of
different dimensions share the table). Each collection gets a partial HNSW index on the
expression ``embedding::vector(D)`` (or ``embedding::halfvec(D)``, half the index size) with the
inner-product operator class, the form pgvector documents for mixed dimensions; queries use the
same expression, so the planner picks that collection's index.

HNSW settings (pgvector's defaults, as documented in its README): ``m = 16`` (graph degree),
``ef_construction = 64`` (candidate list while building), ``ef_search = 40`` (candidate list
while searching; raised to ``k`` when ``k`` is larger). ANN searches turn on
``hnsw.iterative_scan = relaxed_order`` so a filter (assigned faces only) still returns ``k``
rows; exact searches order by the plain column, which no index serves, so every row is scored.

URL: ``postgresql://user:password@host:port/dbname?schema=facelab`` — options (query parameters
or keyword arguments): ``schema`` (created if missing; default the connection's current schema),
``m``, ``ef_construction``, ``ef_search``, ``vector_type`` (``vector`` or ``halfvec``); any other
parameter (``host``, ``sslmode``, ...) goes to libpq. The ``vector`` extension is created when
missing (that needs the right to create it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from facelab.errors import ConfigError, GalleryError
from facelab.gallery._schema import APPLICATION
from facelab.gallery.records import EmbeddingContract
from facelab.gallery.store import GalleryStore, register_backend

__all__ = ["PostgresStore", "HNSW_DEFAULTS"]

_logger = logging.getLogger(__name__)

#: pgvector's HNSW defaults (README, pgvector 0.8): graph degree, build and search candidate lists.
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64, "ef_search": 40}

_INSERT_FACE = (
    "INSERT INTO faces (id, collection_id, person_id, image_id, source, assigned_by, bbox, kps, det_score, quality, "
    "quality_detail, source_sha256, source_path, crop, created_at, embedding) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

_ADVISORY_KEY = 0x66616365  # "face": serialises schema migrations of concurrent processes


def _require_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as exc:
        raise ConfigError(
            f'PostgreSQL galleries need psycopg 3 and pgvector ({exc.name} is missing): pip install "facelab[postgres]"'
        ) from None
    return psycopg, register_vector


def _int_option(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"postgresql gallery: {name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"postgresql gallery: {name} must be in [{low}, {high}], got {number}")
    return number


@register_backend("postgresql", "postgres")
class PostgresStore(GalleryStore):
    """A gallery in a PostgreSQL database with pgvector (see the module docstring).

    Args:
        url: ``postgresql://...`` (query parameters other than facelab's go to libpq).
        schema: schema holding the gallery's tables (created if missing).
        m / ef_construction / ef_search: HNSW settings (see :data:`HNSW_DEFAULTS`).
        vector_type: ``"vector"`` (``float32``) or ``"halfvec"`` (``float16``) for the index.
        **libpq: further connection parameters.

    Raises:
        ConfigError: psycopg or pgvector is not installed, or a bad option.
        GalleryError: the server cannot be reached, lacks pgvector, or the schema holds another
            application's tables.
    """

    dialect = "postgresql"
    supports_vector_search = True

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        m: int | str = HNSW_DEFAULTS["m"],
        ef_construction: int | str = HNSW_DEFAULTS["ef_construction"],
        ef_search: int | str = HNSW_DEFAULTS["ef_search"],
        vector_type: str = "vector",
        **libpq: Any,
    ) -> None:
        super().__init__()
        psycopg, register_vector = _require_driver()
        self._psycopg = psycopg
        parts = urlsplit(url)
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        safe_netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
        self.url = f"{parts.scheme}://{safe_netloc}{parts.path}" + (f"?schema={schema}" if schema else "")
        self.m = _int_option("m", m, 2, 100)
        self.ef_construction = _int_option("ef_construction", ef_construction, 4, 1000)
        self.ef_search = _int_option("ef_search", ef_search, 1, 1000)
        if vector_type not in ("vector", "halfvec"):
            raise ConfigError(f"postgresql gallery: vector_type must be 'vector' or 'halfvec', got {vector_type!r}")
        self.vector_type = vector_type
        try:
            self._con = psycopg.connect(dsn, autocommit=True, **libpq)
        except psycopg.Error as exc:
            raise GalleryError(f"{self.url}: cannot connect to PostgreSQL: {str(exc).strip()}") from exc
        try:
            self._setup(schema, register_vector)
        except BaseException:
            self._con.close()
            raise

    def _setup(self, schema: str | None, register_vector: Any) -> None:
        from psycopg import sql

        try:
            self._con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except self._psycopg.Error as exc:
            raise GalleryError(
                f"{self.url}: the pgvector extension is not available or may not be created here: {str(exc).strip()}"
            ) from exc
        if schema:
            try:
                self._con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            except self._psycopg.errors.UniqueViolation:  # pragma: no cover - two processes at once
                pass
            self._con.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        register_vector(self._con)
        self.schema = self._con.execute("SELECT current_schema()").fetchone()[0]
        self._con.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_KEY,))
        try:
            self._migrate()
        finally:
            self._con.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_KEY,))

    def _vector_type(self) -> str:
        return "vector"

    def _current_version(self) -> int:
        tables = {
            r[0]
            for r in self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        }
        if "gallery_meta" not in tables:
            if tables:
                listed = ", ".join(sorted(tables)[:8])
                raise GalleryError(
                    f"{self.url}: schema {self.schema!r} is not a facelab gallery (it has tables {listed}); "
                    "choose another with ?schema="
                )
            return 0
        meta = dict(self._con.execute("SELECT key, value FROM gallery_meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise GalleryError(f"{self.url}: not a facelab gallery (application {meta.get('application')!r})")
        return int(meta.get("schema_version", 0))

    # -- hooks ----------------------------------------------------------------------------------
    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._con.execute(self._sql(sql), tuple(params))

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._con.cursor() as cur:
            cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    def _begin(self, write: bool) -> None:
        self._con.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _commit(self) -> None:
        self._con.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            self._con.execute("ROLLBACK")
        except self._psycopg.Error:  # pragma: no cover - connection already gone
            pass

    def _encode_vector(self, vector: np.ndarray) -> Any:
        return np.ascontiguousarray(vector, dtype=np.float32)

    def _decode_vectors(self, values: list[Any], dim: int) -> np.ndarray:
        if not values:
            return np.zeros((0, dim), np.float32)
        out = np.stack([np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32) for v in values])
        if out.shape[1] != dim:
            raise GalleryError(f"{self.url}: stored embeddings do not have {dim} dimensions")
        return out

    def _insert_faces(self, rows: list[tuple[Any, ...]]) -> list[int]:
        ids = [
            int(r[0])
            for r in self._con.execute(
                "SELECT nextval(pg_get_serial_sequence('faces', 'id')) FROM generate_series(1, %s)", (len(rows),)
            ).fetchall()
        ]
        full = [(fid, *row) for fid, row in zip(ids, rows)]
        with self._con.cursor() as cur:
            if len(full) >= 256:
                self._copy_faces(cur, full)
            else:
                cur.executemany(_INSERT_FACE, full)
        return ids

    def _copy_faces(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        columns = (
            "id, collection_id, person_id, image_id, source, assigned_by, bbox, kps, det_score, quality, "
            "quality_detail, source_sha256, source_path, crop, created_at, embedding"
        )
        types = ["int8", "int8", "int8", "int8", "text", "text", "bytea", "bytea", "float8", "float8", "text", "text",
                 "bytea", "bytea", "float8", "vector"]  # fmt: skip
        with cur.copy(f"COPY faces ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def _index_name(self, collection_id: int) -> str:
        return f"faces_hnsw_{int(collection_id)}"

    def _expr(self, dim: int) -> str:
        return f"(embedding::{self.vector_type}({int(dim)}))"

    def _on_contract(self, collection_id: int, contract: EmbeddingContract) -> None:
        dim = contract.dim
        limit = 2000 if self.vector_type == "vector" else 4000
        if dim > limit:
            _logger.warning("%s: %d-d vectors exceed pgvector's HNSW limit (%d); searches scan", self.url, dim, limit)
            return
        ops = f"{self.vector_type}_ip_ops"
        self._x(
            f"CREATE INDEX IF NOT EXISTS {self._index_name(collection_id)} ON faces USING hnsw "
            f"({self._expr(dim)} {ops}) WITH (m = {self.m}, ef_construction = {self.ef_construction}) "
            f"WHERE collection_id = {int(collection_id)}"
        )

    @contextmanager
    def bulk_load(self, collection_id: int) -> Iterator[None]:
        """Load many faces fast: the collection's HNSW index is dropped, then built once over all rows.

        pgvector inserts into an HNSW graph one vector at a time (slow: on 2 loaded cores about
        170 inserts/s at 512-d); building after loading is what pgvector's README advises. The
        build gets ``maintenance_work_mem`` of 1 GB when the server allows it; ``ANALYZE`` follows
        so the planner knows the table's new size. Searches meanwhile scan (exactly).
        """
        coll = self.collection(collection_id)
        with self._lock:
            self._x(f"DROP INDEX IF EXISTS {self._index_name(coll.id)}")
            try:
                yield
            finally:
                contract = self.collection(coll.id).contract
                if contract is not None:
                    try:
                        self._x("SET maintenance_work_mem = '1GB'")
                    except self._psycopg.Error:  # pragma: no cover - not allowed for this role
                        pass
                    self._on_contract(coll.id, contract)
                    self._x("RESET maintenance_work_mem")
                self._x("ANALYZE faces")

    def _wrap_error(self, exc: Exception) -> Exception | None:
        errors = self._psycopg.errors
        if isinstance(exc, errors.UniqueViolation | errors.ForeignKeyViolation | errors.CheckViolation):
            return GalleryError(f"{self.url}: refused by the gallery's constraints: {str(exc).strip()}")
        if isinstance(exc, self._psycopg.OperationalError):
            return GalleryError(f"{self.url}: connection problem: {str(exc).strip()}")
        return None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._con.close()

    def erase_deleted(self) -> None:
        """Ask PostgreSQL to reclaim deleted rows now (``VACUUM faces, persons``).

        PostgreSQL keeps deleted tuples in the table files until VACUUM reclaims their space; it
        does not overwrite them, so for strict erasure on disk use ``VACUUM FULL`` or encrypted
        storage (documented limitation).
        """
        with self._lock:
            if self._tx is None:
                for table in ("faces", "persons", "images"):
                    self._con.execute(f"VACUUM {table}")

    # -- vector search --------------------------------------------------------------------------
    def _settings(self, k: int, exact: bool) -> None:
        if exact:
            self._x("SET LOCAL enable_indexscan = off")
            return
        self._x(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, int(k))}")
        try:
            self._x("SAVEPOINT iterative")
            self._x("SET LOCAL hnsw.iterative_scan = relaxed_order")
            self._x("RELEASE SAVEPOINT iterative")
        except self._psycopg.Error:  # pragma: no cover - pgvector < 0.8
            self._x("ROLLBACK TO SAVEPOINT iterative")

    def search_faces_db(
        self, collection_id: int, dim: int, queries: np.ndarray, k: int, *, exact: bool, assigned_only: bool
    ) -> list[list[tuple[int, int | None, float]]]:
        """Top-``k`` faces per query by cosine (pgvector inner product; exact or HNSW)."""
        cid, dim = int(collection_id), int(dim)
        order = f"embedding <#> %s::vector({dim})" if exact else f"{self._expr(dim)} <#> %s::{self.vector_type}({dim})"
        where = f"collection_id = {cid}" + (" AND person_id IS NOT NULL" if assigned_only else "")
        query = (
            f"SELECT id, person_id, -(embedding <#> %s::vector({dim})) AS score FROM faces WHERE {where} "
            f"ORDER BY {order} LIMIT %s"
        )
        out = []
        with self._lock, self.snapshot():
            self._settings(k, exact)
            for q in queries:
                vec = np.ascontiguousarray(q, np.float32)
                rows = self._con.execute(query, (vec, vec, int(k))).fetchall()
                hits = [(int(f), None if p is None else int(p), float(s)) for f, p, s in rows]
                hits.sort(key=lambda h: (-h[2], h[0]))
                out.append(hits)
        return out

    def search_persons_db(
        self, collection_id: int, dim: int, queries: np.ndarray, k: int, *, exact: bool
    ) -> list[list[tuple[int, int, float]]]:
        """Top-``k`` persons per query; a person's score is the max over its faces, ties by face id.

        Exact: one ``DISTINCT ON (person_id)`` scan. ANN: the HNSW index gives the ``max(ef_search,
        10·k)`` nearest assigned faces, grouped by person here; the list widens (×4) until it holds
        ``k`` persons or the collection is exhausted. The queries of one width share one read
        transaction (and its settings).
        """
        cid, dim = int(collection_id), int(dim)
        if not exact:
            out: list[list[tuple[int, int, float]]] = [[] for _ in queries]
            pending, wide = list(range(len(queries))), max(self.ef_search, 10 * int(k))
            while pending:  # widen until k persons are found or the collection is exhausted
                again = []
                found = self.search_faces_db(cid, dim, queries[pending], wide, exact=False, assigned_only=True)
                for i, faces in zip(pending, found):
                    best: dict[int, tuple[int, float]] = {}
                    for fid, pid, score in faces:  # sorted by score desc, face id asc: first seen is the best
                        if pid is not None and pid not in best:
                            best[pid] = (fid, score)
                    if len(best) >= k or len(faces) < wide or wide >= 100_000:
                        ranked = sorted(best.items(), key=lambda item: (-item[1][1], item[0]))[: int(k)]
                        out[i] = [(pid, fid, score) for pid, (fid, score) in ranked]
                    else:
                        again.append(i)
                pending, wide = again, wide * 4
            return out
        query = (
            "SELECT person_id, id, score FROM ("
            f" SELECT DISTINCT ON (person_id) person_id, id, -(embedding <#> %s::vector({dim})) AS score"
            f" FROM faces WHERE collection_id = {cid} AND person_id IS NOT NULL"
            " ORDER BY person_id, score DESC, id) AS best ORDER BY score DESC, person_id LIMIT %s"
        )
        out = []
        with self._lock, self.snapshot():
            self._settings(k, True)
            for q in queries:
                rows = self._con.execute(query, (np.ascontiguousarray(q, np.float32), int(k))).fetchall()
                out.append([(int(p), int(f), float(s)) for p, f, s in rows])
        return out

    def describe(self) -> dict[str, Any]:
        """Server, pgvector and index facts."""
        version = self._one("SHOW server_version")[0]
        pgvector = self._one("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        size = self._one("SELECT pg_total_relation_size('faces')")[0]
        return {
            "backend": "postgresql",
            "url": self.url,
            "schema": self.schema,
            "server_version": version,
            "pgvector": None if pgvector is None else pgvector[0],
            "hnsw": {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search},
            "vector_type": self.vector_type,
            "faces_table_bytes": int(size),
            "schema_version": self.schema_version(),
        }
