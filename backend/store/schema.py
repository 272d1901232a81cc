"""The schema: every migration that built `doctune.duckdb`, in order, and the column lists writes rely on.

Kept apart from the code that applies it so the whole history of the file's tables reads in one place;
`core.StoreCore.migrate` applies what a file lacks when it is opened.
"""

from __future__ import annotations

# Each migration is applied once, in order, in its own transaction; `schema_version` records it.
# Never edit a released migration: append a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "projects, files and chunks",
        """
        CREATE TABLE projects (
            name VARCHAR PRIMARY KEY,
            root VARCHAR NOT NULL,
            git_commit VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        -- one row per path ever seen; status: ok | skipped | gone
        CREATE TABLE files (
            project VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            kind VARCHAR,
            language VARCHAR,
            size_bytes BIGINT,
            sha256 VARCHAR,
            git_commit VARCHAR,
            status VARCHAR NOT NULL,
            skip_reason VARCHAR,
            skip_detail VARCHAR,
            n_chunks INTEGER,
            n_tokens BIGINT,
            chunker VARCHAR,  -- fingerprint of the chunk settings; a change re-chunks the file
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE chunks (
            chunk_id VARCHAR NOT NULL,
            project VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            file_sha256 VARCHAR NOT NULL,
            ord INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            language VARCHAR,
            heading_path VARCHAR[] NOT NULL,
            symbol VARCHAR,
            start_line INTEGER NOT NULL,
            end_line INTEGER NOT NULL,
            token_count INTEGER NOT NULL,
            token_counter VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        2,
        "runs and metrics",
        """
        -- every unit of work that outlives a command: ingest, synthesis, training, evaluation
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            project VARCHAR,
            kind VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            config JSON,
            summary JSON,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ
        );
        CREATE TABLE metrics (
            run_id VARCHAR NOT NULL,
            step BIGINT NOT NULL,
            name VARCHAR NOT NULL,
            value DOUBLE,
            ts TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        3,
        "synthesis: response cache, request log, samples, dead letters, dataset versions",
        """
        -- a paid response, kept by the hash of (model, prompt, parameters, sample index): never paid twice
        CREATE TABLE responses (
            cache_key VARCHAR PRIMARY KEY,
            model VARCHAR NOT NULL,
            content VARCHAR NOT NULL,
            tokens_in INTEGER,
            tokens_out INTEGER,
            cost_usd DOUBLE,
            created_at TIMESTAMPTZ NOT NULL
        );
        -- every HTTP attempt, failed ones included (never the API key)
        CREATE TABLE api_requests (
            run_id VARCHAR NOT NULL,
            chunk_id VARCHAR,
            task VARCHAR,
            cache_key VARCHAR,
            attempt INTEGER,
            status VARCHAR NOT NULL,     -- ok | http_429 | http_5xx | http_4xx | timeout | connection | parse_error
            http_status INTEGER,
            tokens_in INTEGER,
            tokens_out INTEGER,
            cost_usd DOUBLE,
            latency_ms DOUBLE,
            error VARCHAR,
            ts TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE samples (
            sample_id VARCHAR PRIMARY KEY,
            project VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            cache_key VARCHAR NOT NULL,
            chunk_id VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            start_line INTEGER,
            end_line INTEGER,
            task VARCHAR NOT NULL,
            language VARCHAR NOT NULL,
            instruction VARCHAR NOT NULL,
            input VARCHAR NOT NULL,
            output VARCHAR NOT NULL,
            messages JSON,
            generator VARCHAR NOT NULL,
            template_version VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        );
        -- units of work that kept failing, with why; `--retry-failed` retries exactly these
        CREATE TABLE dead_letters (
            run_id VARCHAR NOT NULL,
            cache_key VARCHAR NOT NULL,
            chunk_id VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            detail VARCHAR,
            attempts INTEGER,
            resolved BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE judgements (
            sample_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            score DOUBLE,
            reason VARCHAR,
            cache_key VARCHAR,
            created_at TIMESTAMPTZ NOT NULL
        );
        -- a curated dataset version is immutable: its rows are copies, never updated
        CREATE TABLE datasets (
            project VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            parent VARCHAR,
            source_runs VARCHAR[],
            config JSON,
            stats JSON,
            note VARCHAR,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE dataset_samples (
            project VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            sample_id VARCHAR NOT NULL,
            split VARCHAR NOT NULL,
            judge_score DOUBLE,
            exec_status VARCHAR,
            run_id VARCHAR,
            chunk_id VARCHAR,
            path VARCHAR,
            start_line INTEGER,
            end_line INTEGER,
            task VARCHAR,
            language VARCHAR,
            instruction VARCHAR,
            input VARCHAR,
            output VARCHAR,
            messages JSON,
            generator VARCHAR,
            template_version VARCHAR
        );
        """,
    ),
    (
        4,
        "run events",
        """
        -- what happened to a run besides its metrics: queued, started, checkpoint, oom, cancelled, resumed
        CREATE TABLE run_events (
            run_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            detail JSON,
            ts TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        5,
        "evaluation results",
        """
        -- one row per held-out prompt of an evaluation run: both outputs side by side, with their scores
        CREATE TABLE eval_results (
            run_id VARCHAR NOT NULL,        -- the evaluation run
            adapter_run VARCHAR NOT NULL,   -- the training run whose adapter was evaluated
            eval_set VARCHAR NOT NULL,      -- the dataset split (e.g. test) or 'retention'
            sample_id VARCHAR NOT NULL,
            task VARCHAR,
            prompt JSON,
            reference VARCHAR,
            base_output VARCHAR,
            tuned_output VARCHAR,
            base_scores JSON,
            tuned_scores JSON,
            judge VARCHAR,                  -- win | tie | loss (for tuned), NULL when not judged
            judge_detail JSON,
            created_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        6,
        "knowledge probes and the repository's identifiers",
        """
        -- a knowledge probe's expected fact, alone (a default, a name, a code); NULL for other samples
        ALTER TABLE samples ADD COLUMN fact VARCHAR;
        ALTER TABLE dataset_samples ADD COLUMN fact VARCHAR;
        ALTER TABLE eval_results ADD COLUMN fact VARCHAR;
        -- per side, the repository names an output mentioned and those it claimed that do not exist
        ALTER TABLE eval_results ADD COLUMN details JSON;
        -- every name the repository defines or documents, rebuilt after each ingest: what the
        -- repository-grounded metrics (api_recall, api_hallucination) look answers up in
        CREATE TABLE identifiers (
            project VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,     -- module | class | function | method | parameter | constant | exception |
                                       -- code_span | flag | error_code | config_key | cli_command
            path VARCHAR,              -- where it was first seen
            qualified BOOLEAN NOT NULL -- a dotted name under one of the repository's own modules
        );
        """,
    ),
    (
        7,
        "one status vocabulary for every kind of run",
        """
        -- ingest and synthesis runs used to end `succeeded` where the others ended `completed`
        -- (`backend.run_status.RunStatus` is the vocabulary now)
        UPDATE runs SET status = 'completed' WHERE status = 'succeeded';
        """,
    ),
    (
        8,
        "dataset lineage: what made each version, the current version, reviews carried forward",
        """
        -- synthesis | retry | refresh | curation | review; versions made before lineage was kept were a review
        -- when they had a parent, else a curation of runs' samples
        ALTER TABLE datasets ADD COLUMN operation VARCHAR;
        UPDATE datasets SET operation = CASE WHEN parent IS NULL THEN 'curation' ELSE 'review' END;
        -- the version training and export use by default (none: the latest)
        CREATE TABLE dataset_current (
            project VARCHAR PRIMARY KEY,
            version VARCHAR NOT NULL
        );
        -- a reviewer's decision on one sample, made by the review that created `version` and carried into every
        -- later version of that line; the source chunk's id (a hash of its text) ends it when the source changes
        CREATE TABLE dataset_reviews (
            project VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            sample_id VARCHAR NOT NULL,
            chunk_id VARCHAR,
            reject BOOLEAN NOT NULL,
            edits JSON,                 -- field -> value (messages as its list of turns); NULL for a rejection
            created_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        9,
        "provenance to the commit, and the files each dataset version was made from",
        """
        -- the source file's commit (NULL outside git) and content hash a sample's text came from; the cache key of
        -- the request that made it, so a refresh knows which version rows a still-planned request covers
        ALTER TABLE samples ADD COLUMN source_commit VARCHAR;
        ALTER TABLE samples ADD COLUMN file_sha256 VARCHAR;
        ALTER TABLE dataset_samples ADD COLUMN source_commit VARCHAR;
        ALTER TABLE dataset_samples ADD COLUMN file_sha256 VARCHAR;
        ALTER TABLE dataset_samples ADD COLUMN cache_key VARCHAR;
        UPDATE dataset_samples d SET cache_key = s.cache_key FROM samples s WHERE s.sample_id = d.sample_id;
        -- the corpus a version was made from: each file's hash when it was created (what `doctune refresh` and the
        -- drift views compare); versions older than this migration get the files as they are now
        CREATE TABLE dataset_files (
            project VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            sha256 VARCHAR,
            git_commit VARCHAR
        );
        INSERT INTO dataset_files SELECT d.project, d.version, f.path, f.sha256, f.git_commit
            FROM datasets d JOIN files f ON f.project = d.project AND f.status = 'ok';
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The columns of an ingest batch's Arrow tables (`backend.ingest`): the tables' own minus the timestamps,
# which the store sets when the batch lands.
FILE_COLUMNS = (
    "project", "path", "kind", "language", "size_bytes", "sha256", "git_commit",
    "status", "skip_reason", "skip_detail", "n_chunks", "n_tokens", "chunker",
)
CHUNK_COLUMNS = (
    "chunk_id", "project", "path", "file_sha256", "ord", "kind", "language", "heading_path",
    "symbol", "start_line", "end_line", "token_count", "token_counter", "text",
)
