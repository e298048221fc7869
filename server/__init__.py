"""The protoevents proxy: ingest, persistence, dedup, writers and inspection."""
