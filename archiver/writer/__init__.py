"""The stages from decoded records to committed files: rows, routing, the per-partition buffer
and its rotation policy, Parquet encoding, and files (upload and ledger commit, the only I/O)."""
