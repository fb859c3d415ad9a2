-- Sample shop schema for the demo (scripts/demo.sh) and end-to-end tests
-- (testenv.SampleSchema). It is the one canonical copy: edit it here.
--
-- The data is generated, not random, so tests can assert exact numbers.
-- Order dates are relative to current_date (yesterday, 2 and 3 days ago)
-- and always in the past, so "yesterday's failed orders" means the same
-- thing whenever the schema is loaded. With the session's TimeZone:
--   customers: 20; orders: 200 (66 yesterday, 67 two days ago, 67 three days ago)
--   statuses overall: new 25, paid 75, shipped 75, failed 25
--   failed orders yesterday: 8
-- Loading it again drops and recreates both tables.

DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS customers;

CREATE TABLE customers (
    id         serial PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    status      text NOT NULL CHECK (status IN ('new', 'paid', 'failed', 'shipped')),
    amount      numeric(10, 2) NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE INDEX orders_created_at_idx ON orders (created_at);

INSERT INTO customers (name, email)
SELECT (ARRAY['Ada', 'Grace', 'Linus', 'Barbara', 'Ken', 'Margaret', 'Dennis',
              'Frances', 'Edsger', 'Radia'])[(i - 1) % 10 + 1]
       || ' ' ||
       (ARRAY['Lovelace', 'Hopper', 'Torvalds', 'Liskov', 'Thompson',
              'Hamilton', 'Ritchie', 'Allen', 'Dijkstra', 'Perlman'])[(i * 3) % 10 + 1],
       'customer' || i || '@example.com'
FROM generate_series(1, 20) AS i
ORDER BY i;

-- Status cycles over 8 orders and the day over 3, so every (day, status)
-- pair occurs; the time of day spreads orders over the whole day.
INSERT INTO orders (customer_id, status, amount, created_at)
SELECT i % 20 + 1,
       (ARRAY['new', 'paid', 'paid', 'shipped', 'shipped', 'failed', 'paid', 'shipped'])[i % 8 + 1],
       ((i * 37) % 500 + 5) + (i % 100) / 100.0,
       current_date - (i % 3 + 1) + make_interval(mins => (i * 97) % 1440)
FROM generate_series(1, 200) AS i
ORDER BY i;
