-- irtdb schema 1: everything that describes one image collection.
--
-- The schema version is SQLite's user_version, maintained by rusqlite_migration; never edit an
-- applied migration, add migrations/NN-name/up.sql instead. PRAGMAs (WAL, foreign keys) are set
-- per connection by irtdb-store, not here.
--
-- Plain types only (no STRICT tables) so that any SQLite client, including old ones bundled with
-- Python, can read the file. Vectors are BLOBs of little-endian f32: numpy.frombuffer(blob, '<f4').
-- Timestamps are UTC ISO-8601 text.

-- Key/value facts about the database: 'app_version' (irtdb version that last wrote),
-- 'created_by' (irtdb version that created it), 'collection_root' (absolute path of the folder
-- that image paths are relative to).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- One row per image file found under the collection root, whether or not it could be embedded.
CREATE TABLE images (
    id         INTEGER PRIMARY KEY,
    -- Relative to the collection root, '/' separated, no '.' or '..' components.
    path       TEXT NOT NULL UNIQUE CHECK (path <> '' AND substr(path, 1, 1) <> '/'),
    size       INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns   INTEGER NOT NULL,
    -- blake3 of the file content, lowercase hex.
    hash       TEXT NOT NULL,
    width      INTEGER CHECK (width IS NULL OR width >= 0),
    height     INTEGER CHECK (height IS NULL OR height >= 0),
    label      TEXT,
    status     TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    -- Why the image failed; NULL exactly when status = 'ok'.
    error      TEXT,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CHECK ((status = 'ok') = (error IS NULL))
);
CREATE INDEX images_failed ON images (status) WHERE status = 'failed';

-- A descriptor extractor: plugin + backbone + weights + preprocessing/pooling. A query must use
-- exactly the model that the collection was indexed with.
CREATE TABLE models (
    id             INTEGER PRIMARY KEY,
    plugin         TEXT NOT NULL,
    backbone       TEXT NOT NULL,
    -- Where the weights were last found; NULL for random weights.
    weights_path   TEXT,
    weights_hash   TEXT NOT NULL,
    -- JSON object, keys sorted: preprocessing, pooling, backbone details.
    config         TEXT NOT NULL CHECK (json_valid(config)),
    dim            INTEGER NOT NULL CHECK (dim > 0),
    random_weights INTEGER NOT NULL CHECK (random_weights IN (0, 1)),
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (plugin, backbone, weights_hash, config)
);

-- One L2-normalised descriptor per (image, model): dim little-endian f32.
CREATE TABLE descriptors (
    image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    vector   BLOB NOT NULL CHECK (typeof(vector) = 'blob' AND length(vector) % 4 = 0),
    PRIMARY KEY (image_id, model_id)
);
CREATE INDEX descriptors_by_model ON descriptors (model_id, image_id);

-- A PCA fitted on one model's descriptors. Blobs are little-endian f32: mean [in_dim],
-- components [out_dim x in_dim] row-major, explained_variance [out_dim].
CREATE TABLE pca (
    id                 INTEGER PRIMARY KEY,
    model_id           INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    in_dim             INTEGER NOT NULL CHECK (in_dim > 0),
    out_dim            INTEGER NOT NULL CHECK (out_dim > 0 AND out_dim <= in_dim),
    whiten             INTEGER NOT NULL CHECK (whiten IN (0, 1)),
    mean               BLOB NOT NULL CHECK (length(mean) = 4 * in_dim),
    components         BLOB NOT NULL CHECK (length(components) = 4 * in_dim * out_dim),
    explained_variance BLOB NOT NULL CHECK (length(explained_variance) = 4 * out_dim),
    total_variance     REAL NOT NULL,
    n_samples          INTEGER NOT NULL CHECK (n_samples >= 0),
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX pca_by_model ON pca (model_id);

-- Search index files (HNSW graph + data) written beside the database. A generation is recorded
-- only after its files are durable; exactly one generation per model is current.
CREATE TABLE index_generations (
    id         INTEGER PRIMARY KEY,
    model_id   INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    pca_id     INTEGER REFERENCES pca (id),
    kind       TEXT NOT NULL CHECK (kind <> ''),
    params     TEXT NOT NULL CHECK (json_valid(params)),
    -- JSON array of file names relative to the database's folder.
    files      TEXT NOT NULL CHECK (json_valid(files) AND json_type(files) = 'array'),
    count      INTEGER NOT NULL CHECK (count >= 0),
    current    INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX index_generations_by_model ON index_generations (model_id);
CREATE INDEX index_generations_by_pca ON index_generations (pca_id);
CREATE UNIQUE INDEX index_generations_one_current ON index_generations (model_id) WHERE current = 1;
