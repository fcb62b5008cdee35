"""Per-partition buffers, the rotation policy and Parquet encoding. Pure: no I/O."""
