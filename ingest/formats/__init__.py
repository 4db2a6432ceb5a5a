"""One module per file format, each with its SUFFIXES and a `read(path, options)`; ingest.readers registers them."""
