-- Databases, users and schemas of the platform's PostgreSQL (service mlops-postgres).
--
-- Run once by the official image's entrypoint (/docker-entrypoint-initdb.d) as the
-- superuser, and safe to run again: every statement checks what exists first.
-- Passwords are never written here: psql's \getenv reads them from the container's
-- environment (.env in Compose, a Secret in Kubernetes); a missing one stops the script.
--
--   database  owner    holds
--   airflow   airflow  Airflow's metadata
--   mlflow    mlflow   MLflow's tracking store and model registry
--   mlops     mlops    the data: schemas raw_data, clean_data and serving (tables created by
--                      readmission.db.create_tables, derived from readmission/schema.py)

\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv mlops_password MLOPS_DB_PASSWORD

\if :{?airflow_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'AIRFLOW_DB_PASSWORD is not set in the environment'; END $$;
\endif
\if :{?mlflow_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'MLFLOW_DB_PASSWORD is not set in the environment'; END $$;
\endif
\if :{?mlops_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'MLOPS_DB_PASSWORD is not set in the environment'; END $$;
\endif

-- Users (created once; the password is (re)set on every run so .env stays the truth).
SELECT format('CREATE ROLE %I LOGIN', name)
FROM (VALUES ('airflow'), ('mlflow'), ('mlops')) AS wanted(name)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = wanted.name)
\gexec
ALTER ROLE airflow WITH LOGIN PASSWORD :'airflow_password';
ALTER ROLE mlflow WITH LOGIN PASSWORD :'mlflow_password';
ALTER ROLE mlops WITH LOGIN PASSWORD :'mlops_password';

-- Databases, each owned by its user.
SELECT format('CREATE DATABASE %I OWNER %I', name, name)
FROM (VALUES ('airflow'), ('mlflow'), ('mlops')) AS wanted(name)
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = wanted.name)
\gexec

-- Airflow 3 and MLflow create their tables in the public schema of their database.
\connect airflow
GRANT ALL ON SCHEMA public TO airflow;
\connect mlflow
GRANT ALL ON SCHEMA public TO mlflow;

-- The data: raw as loaded, clean as the models see it.
\connect mlops
CREATE SCHEMA IF NOT EXISTS raw_data AUTHORIZATION mlops;
CREATE SCHEMA IF NOT EXISTS clean_data AUTHORIZATION mlops;
CREATE SCHEMA IF NOT EXISTS serving AUTHORIZATION mlops;
COMMENT ON SCHEMA raw_data IS 'The UCI file as loaded, 15,000-row batches, train/valid/test marked';
COMMENT ON SCHEMA clean_data IS 'Encounters cleaned by readmission.cleaning, ready for training';
COMMENT ON SCHEMA serving IS 'What the inference API served: the prediction log';
ALTER ROLE mlops SET search_path = raw_data, clean_data, serving, public;
