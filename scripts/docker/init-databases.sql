-- One PostgreSQL server, one database per service: each service is given
-- only its own database URL, and migrates it at start.
CREATE DATABASE orders;
CREATE DATABASE payments;
