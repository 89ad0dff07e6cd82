// Sign the gateway's login challenge with an API key, in the browser (docs/asyncapi.yaml,
// Login): Ed25519 over the UTF-8 of "gpux-login-v1\n{nonce}\n{timestamp_ms}\n{key_id}".
//
// WebCrypto's Ed25519 is used where the browser has it (a secure context: https or
// localhost); elsewhere (plain http to another host has no crypto.subtle) the audited
// noble implementation signs instead. The private key never leaves the page.

import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";

ed.hashes.sha512 = sha512;

const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
// PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410): a fixed 16-byte prefix.
const PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

export class KeyError extends Error {}

/** Decode base64 or base64url (padding optional) into bytes. */
export function decodeBase64(text) {
  const normal = text.trim().replace(/-/g, "+").replace(/_/g, "/");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(normal)) throw new KeyError("not base64");
  const padded = normal + "=".repeat((4 - (normal.length % 4)) % 4);
  const binary = atob(padded);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function encodeBase64(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Check and normalise an API key as `gpux gateway add-key` prints it. */
export function parseApiKey(keyId, privateKey) {
  const id = String(keyId ?? "").trim();
  if (!KEY_ID_PATTERN.test(id)) throw new KeyError("the key id should look like k0123abcd…");
  let seed;
  try {
    seed = decodeBase64(String(privateKey ?? ""));
  } catch {
    throw new KeyError("the private key is not base64");
  }
  if (seed.length !== 32) throw new KeyError("the private key should be 32 bytes (base64url)");
  return { keyId: id, seed };
}

/** Read `key=KEY_ID:PRIVATE_KEY` (or `key_id=` and `key=`) and `account=` from a fragment. */
export function keyFromFragment(fragment) {
  const params = new URLSearchParams(fragment.replace(/^#/, ""));
  const key = params.get("key");
  if (!key) return null;
  const [keyId, privateKey] = key.includes(":") ? key.split(":", 2) : [params.get("key_id"), key];
  return { keyId, privateKey, account: params.get("account") };
}

export function loginPayload(nonce, timestampMs, keyId) {
  return new TextEncoder().encode(`gpux-login-v1\n${nonce}\n${timestampMs}\n${keyId}`);
}

async function signWithWebCrypto(seed, message) {
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + seed.length);
  pkcs8.set(PKCS8_PREFIX);
  pkcs8.set(seed, PKCS8_PREFIX.length);
  const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, message));
}

let webCryptoWorks = globalThis.crypto?.subtle !== undefined;

/** Return the login fields (signature base64) for the challenge `nonce`. */
export async function signLogin({ keyId, seed }, nonce, timestampMs) {
  const message = loginPayload(nonce, timestampMs, keyId);
  let signature = null;
  if (webCryptoWorks) {
    try {
      signature = await signWithWebCrypto(seed, message);
    } catch {
      webCryptoWorks = false; // no Ed25519 in this browser's WebCrypto: use noble from now on
    }
  }
  if (signature === null) signature = ed.sign(message, seed);
  return { key_id: keyId, timestamp_ms: timestampMs, signature: encodeBase64(signature) };
}

export function signerName() {
  return webCryptoWorks ? "WebCrypto Ed25519" : "noble-ed25519";
}
