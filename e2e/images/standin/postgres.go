package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"net"
	"net/url"
	"time"

	"github.com/lib/pq"
)

// pgParams are the connection settings the CARTO .env gives the services.
type pgParams struct {
	Host, Port, SSLMode               string
	AdminUser, AdminPassword, AdminDB string
	User, Password, DB                string
}

func pgParamsFromEnv(getenv func(string) string) pgParams {
	or := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	return pgParams{
		Host:          or("WORKSPACE_POSTGRES_HOST", "workspace-postgres"),
		Port:          or("WORKSPACE_POSTGRES_PORT", "5432"),
		SSLMode:       or("WORKSPACE_POSTGRES_SSL_MODE", "disable"),
		AdminUser:     or("POSTGRES_ADMIN_USER", "postgres"),
		AdminPassword: getenv("POSTGRES_ADMIN_PASSWORD"),
		AdminDB:       or("POSTGRES_ADMIN_DB", "postgres"),
		User:          getenv("WORKSPACE_POSTGRES_USER"),
		Password:      getenv("WORKSPACE_POSTGRES_PASSWORD"),
		DB:            getenv("WORKSPACE_POSTGRES_DB"),
	}
}

func (p pgParams) dsn(user, password, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(p.Host, p.Port),
		Path:     "/" + db,
		RawQuery: url.Values{"sslmode": {p.SSLMode}, "connect_timeout": {"5"}}.Encode(),
	}
	return u.String()
}

// workspaceDSN is how /db connects: as the workspace user to the workspace
// database, or with the POSTGRES_ADMIN_* settings for what is not set.
func workspaceDSN(getenv func(string) string) (string, error) {
	p := pgParamsFromEnv(getenv)
	user, password, db := p.User, p.Password, p.DB
	if user == "" {
		user, password = p.AdminUser, p.AdminPassword
	}
	if db == "" {
		db = p.AdminDB
	}
	if getenv("WORKSPACE_POSTGRES_HOST") == "" && getenv("POSTGRES_ADMIN_USER") == "" {
		return "", fmt.Errorf("neither WORKSPACE_POSTGRES_HOST nor POSTGRES_ADMIN_USER is set")
	}
	return p.dsn(user, password, db), nil
}

// migrate does what CARTO's onprem-init-db.sh does, in miniature and
// idempotently: wait for Postgres, create the workspace role and database
// when missing (if the admin password is known), create carto_migrations
// and record STANDIN_VERSION in it.
func migrate(ctx context.Context, cfg config, getenv func(string) string) error {
	p := pgParamsFromEnv(getenv)
	if p.User == "" || p.DB == "" {
		return fmt.Errorf("WORKSPACE_POSTGRES_USER and WORKSPACE_POSTGRES_DB must be set")
	}
	wait := 60 * time.Second
	if v := getenv("STANDIN_DB_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("STANDIN_DB_WAIT %q: %w", v, err)
		}
		wait = d
	}
	log.Printf("migrate: waiting up to %s for postgres at %s:%s", wait, p.Host, p.Port)

	if p.AdminPassword != "" {
		admin, err := openWait(ctx, p.dsn(p.AdminUser, p.AdminPassword, p.AdminDB), wait)
		if err != nil {
			return fmt.Errorf("connecting as %s: %w", p.AdminUser, err)
		}
		defer admin.Close()
		if err := ensureRoleAndDB(ctx, admin, p); err != nil {
			return err
		}
	} else {
		log.Print("migrate: POSTGRES_ADMIN_PASSWORD not set; the workspace role and database must exist")
	}

	db, err := openWait(ctx, p.dsn(p.User, p.Password, p.DB), wait)
	if err != nil {
		return fmt.Errorf("connecting to %s as %s: %w", p.DB, p.User, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS carto_migrations (
		version text PRIMARY KEY,
		applied_at timestamptz DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("creating carto_migrations: %w", err)
	}
	// A release's schema change (STANDIN_MIGRATE_SQL, baked into its
	// workspace-db image) runs with the version's record, in one
	// transaction: applied once, or not at all.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrating to %s: %w", cfg.Version, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `INSERT INTO carto_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING`, cfg.Version)
	if err != nil {
		return fmt.Errorf("recording version %s: %w", cfg.Version, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		log.Printf("migrate: version %s already applied", cfg.Version)
		return nil
	}
	if q := getenv("STANDIN_MIGRATE_SQL"); q != "" {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("migrating to %s: %w", cfg.Version, err)
		}
		log.Printf("migrate: ran the schema change of %s", cfg.Version)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrating to %s: %w", cfg.Version, err)
	}
	log.Printf("migrate: applied version %s", cfg.Version)
	log.Print("migrate: done")
	return nil
}

func ensureRoleAndDB(ctx context.Context, admin *sql.DB, p pgParams) error {
	var exists bool
	if p.User != p.AdminUser {
		if err := admin.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, p.User).Scan(&exists); err != nil {
			return fmt.Errorf("looking up role %s: %w", p.User, err)
		}
		if !exists {
			// CREATE ROLE takes no bind parameters: quote instead.
			q := fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD %s`, pq.QuoteIdentifier(p.User), pq.QuoteLiteral(p.Password))
			if _, err := admin.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("creating role %s: %w", p.User, err)
			}
			log.Printf("migrate: created role %s", p.User)
		}
	}
	if err := admin.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, p.DB).Scan(&exists); err != nil {
		return fmt.Errorf("looking up database %s: %w", p.DB, err)
	}
	if !exists {
		q := fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, pq.QuoteIdentifier(p.DB), pq.QuoteIdentifier(p.User))
		if _, err := admin.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating database %s: %w", p.DB, err)
		}
		log.Printf("migrate: created database %s", p.DB)
	}
	return nil
}

// openWait opens a connection pool and pings until the server answers or
// wait has passed, retrying every second.
func openWait(ctx context.Context, dsn string, wait time.Duration) (*sql.DB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		err = db.PingContext(ctx)
		if err == nil {
			return db, nil
		}
		select {
		case <-ctx.Done():
			db.Close()
			return nil, fmt.Errorf("postgres not ready after %s: %w", wait, err)
		case <-time.After(time.Second):
		}
	}
}
