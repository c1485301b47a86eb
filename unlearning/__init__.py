"""Unlearning: MEDU-compressed sealed history records, unlearning rules, verification."""
