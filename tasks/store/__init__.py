"""Where state and outputs live: storage (any fsspec URL), tables, the items table,
fingerprints, ledgers, merged tables and the one-writer lock."""
