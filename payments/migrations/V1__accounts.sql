-- One account per user. The balance can never go negative.
CREATE TABLE accounts (
    user_id         UUID        PRIMARY KEY,
    balance         BIGINT      NOT NULL DEFAULT 0 CHECK (balance >= 0),
    -- Idempotency key of the request that opened the account, if any.
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every credit is a ledger row, so a balance can always be explained:
-- balance = sum(credits) - sum(paid payments).
CREATE TABLE credits (
    id              BIGSERIAL   PRIMARY KEY,
    user_id         UUID        NOT NULL REFERENCES accounts (user_id),
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    balance_after   BIGINT      NOT NULL,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL keys are distinct, so un-keyed credits never collide.
    UNIQUE (user_id, idempotency_key)
);

CREATE INDEX credits_user_id ON credits (user_id);
