"""Conversion: external event files (NanoAOD/Delphes ROOT through uproot, JSON) -> canonical Parquet.
Readers only interpret their source format; the canonical layer defines and writes the result."""
