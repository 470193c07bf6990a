"""The environment a run computes in, and the environments a study builds.

Layer 2 (above `errors` and `config`): what this process is (`provenance`: packages, CPU, GPU, threads; `loaded`:
what it actually loaded; `threads`), and the other environments a study computes in (`specs`: conf/env/ and its
axes table; `venvs`: cached venvs and running the package inside one; `failure`: why a run there failed).
Nothing here knows colbert-ai or the store.
"""
