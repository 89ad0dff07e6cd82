-- API keys, the role of each account, and the login nonces already used.
CREATE TABLE gateway.accounts (
    account    text PRIMARY KEY CHECK (account ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    role       text NOT NULL
               CHECK (role IN ('trader', 'operator', 'market_maker', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE gateway.api_keys (
    key_id     text PRIMARY KEY,
    account    text NOT NULL REFERENCES gateway.accounts (account),
    role       text NOT NULL
               CHECK (role IN ('trader', 'operator', 'market_maker', 'admin')),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_account ON gateway.api_keys (account);
CREATE TABLE gateway.login_nonces (
    nonce   text PRIMARY KEY,
    used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_nonces_used_at ON gateway.login_nonces (used_at);
