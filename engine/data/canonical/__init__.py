"""The canonical format: the Parquet schema every stage agrees on, its checked reading and atomic
writing, event selection and summaries; it depends on no other stage."""
