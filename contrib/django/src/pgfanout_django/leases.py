"""Lease key names, tokens and the fill protocol's Lua scripts (pgfanout's contrib/redis).

A lease key is computed from the full cache key K (after Django's KEY_PREFIX and VERSION) the
same way pgfanout computes it (sinks/redis_lease.c), so the DEL that pgfanout sends for K also
removes K's lease:

- layout "suffix": L = K + suffix, always;
- layout "cluster": L shares K's Redis Cluster hash slot.  If K has a hash tag (the first '{',
  then the first '}' after it, with at least one character between), L = K + suffix; else if
  K is not empty and has no '}', L = '{' + K + '}' + suffix; else there is no such name, and
  K gets no lease (lease_key returns None).
"""
import os
import secrets

LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua")
SCRIPT_NAMES = ("lease_get", "lease_fill", "lease_release")

# lease_get.lua's answers.
HIT = 1
GRANTED = 2
BUSY = 3


def lua_source(name):
    """The text of one of the shipped scripts (name without .lua)."""
    with open(os.path.join(LUA_DIR, name + ".lua"), "rb") as f:
        return f.read()


def has_hash_tag(key):
    """True when key has a Redis Cluster hash tag (a '{', then a '}' after it, with at least
    one character between the first '{' and the first '}' after it)."""
    open_at = key.find("{")
    if open_at < 0:
        return False
    close_at = key.find("}", open_at + 1)
    return close_at > open_at + 1


def lease_key(key, suffix=":lease", layout="suffix"):
    """The lease key of the full cache key key, or None when the cluster layout has no name in
    key's hash slot (a '}' without a valid tag, or an empty key)."""
    if layout == "suffix" or has_hash_tag(key):
        return key + suffix
    if layout != "cluster":
        raise ValueError(f"unknown lease layout {layout!r}: use 'suffix' or 'cluster'")
    if not key or "}" in key:
        return None
    return "{" + key + "}" + suffix


def new_token():
    """A fresh lease token: 128 random bits in hex."""
    return secrets.token_hex(16)


class Scripts:
    """redis-py Script objects of the three scripts for one client.  A Script runs EVALSHA and,
    on NOSCRIPT (a restarted Redis, SCRIPT FLUSH), loads the script again and retries."""

    def __init__(self, client):
        self.get = client.register_script(lua_source("lease_get"))
        self.fill = client.register_script(lua_source("lease_fill"))
        self.release = client.register_script(lua_source("lease_release"))
