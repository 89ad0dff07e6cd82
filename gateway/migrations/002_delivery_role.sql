-- The delivery role: the venue's delivery service, the one credential that may report
-- deliveries (PROTOCOL.md v2, Delivery).
ALTER TABLE gateway.accounts DROP CONSTRAINT accounts_role_check;
ALTER TABLE gateway.accounts ADD CONSTRAINT accounts_role_check
    CHECK (role IN ('trader', 'operator', 'market_maker', 'admin', 'delivery'));
ALTER TABLE gateway.api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE gateway.api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('trader', 'operator', 'market_maker', 'admin', 'delivery'));
