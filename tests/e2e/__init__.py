"""Helpers for end-to-end tests on real traffic: local servers, real clients, tcpdump."""
