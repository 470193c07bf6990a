"""Writers of what a person reads: tables, reports."""
