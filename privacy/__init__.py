"""Local and distributed differential privacy: clipping, integer noise, calibration, accounting,
the budget ledger's logic, LDP-FedP3 and empirical audits. The math is pure; imports only ``secagg``."""
