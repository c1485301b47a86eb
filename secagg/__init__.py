"""Secure aggregation core: lattice codes, PRG masks, keys, Shamir, wire messages, SecAgg+.

Pure: no I/O, no database, no network, no global state. Imports nothing else of fedvault's.
"""
