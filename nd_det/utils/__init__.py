"""Small helpers shared by the detection and classification sides (torch and stdlib only)."""
