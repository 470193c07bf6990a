"""The proof: comparing values and runs (`compare/`), explaining differences (`analysis/`), and the reports
every task writes (`report/`).

Layer 5, beside `runs`: reads stored runs through the core and the mirror's facts; executes nothing.
"""
