"""Spreadsheets in: a CSV, TSV or Excel sheet read as it is, and its rows mapped to a blueprint's
inputs, one crew per row (`reader.read_sheet`, `mapping.rows_to_inputs`)."""
