-- The sample shop schema of sample_schema.sql in MySQL's dialect
-- (testenv.SampleSchemaMySQL), for MariaDB and MySQL 8: the same tables,
-- the same generated data, the same numbers:
--   customers: 20; orders: 200 (66 yesterday, 67 two days ago, 67 three days ago)
--   statuses overall: new 25, paid 75, shipped 75, failed 25
--   failed orders yesterday: 8
-- Loading it again drops and recreates both tables.

DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS customers;

CREATE TABLE customers (
    id         INT AUTO_INCREMENT PRIMARY KEY,
    name       VARCHAR(100) NOT NULL,
    email      VARCHAR(200) NOT NULL UNIQUE,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE = InnoDB;

CREATE TABLE orders (
    id          INT AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    status      VARCHAR(10) NOT NULL CHECK (status IN ('new', 'paid', 'failed', 'shipped')),
    amount      DECIMAL(10, 2) NOT NULL,
    created_at  DATETIME NOT NULL,
    INDEX orders_created_at_idx (created_at),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB;

INSERT INTO customers (name, email)
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
SELECT CONCAT(ELT((i - 1) % 10 + 1, 'Ada', 'Grace', 'Linus', 'Barbara', 'Ken', 'Margaret', 'Dennis',
                  'Frances', 'Edsger', 'Radia'),
              ' ',
              ELT((i * 3) % 10 + 1, 'Lovelace', 'Hopper', 'Torvalds', 'Liskov', 'Thompson',
                  'Hamilton', 'Ritchie', 'Allen', 'Dijkstra', 'Perlman')),
       CONCAT('customer', i, '@example.com')
FROM n
ORDER BY i;

-- Status cycles over 8 orders and the day over 3, so every (day, status)
-- pair occurs; the time of day spreads orders over the whole day.
INSERT INTO orders (customer_id, status, amount, created_at)
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
SELECT i % 20 + 1,
       ELT(i % 8 + 1, 'new', 'paid', 'paid', 'shipped', 'shipped', 'failed', 'paid', 'shipped'),
       ((i * 37) % 500 + 5) + (i % 100) / 100.0,
       CURRENT_DATE - INTERVAL (i % 3 + 1) DAY + INTERVAL ((i * 97) % 1440) MINUTE
FROM n
ORDER BY i;
