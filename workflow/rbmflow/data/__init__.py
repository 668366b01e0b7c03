"""Input data: fetching, parsing and encoding alignments, sequence weights, the encoded dataset."""
