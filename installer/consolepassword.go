package installer

import (
	"context"
	"errors"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/console"
)

// SetConsolePassword sets the admin console's password: its bcrypt hash
// goes into appliance.yaml's console section (the password itself is
// never stored), written under the converge lock. The agent starts the
// console, or takes the new password, at its next look (seconds).
func SetConsolePassword(ctx context.Context, paths config.Paths, password []byte) (url string, err error) {
	paths = paths.WithDefaults()
	hash, err := hashConsolePassword(password)
	if err != nil {
		return "", err
	}
	if _, err := loadInstalledConfig(paths); err != nil {
		return "", err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return "", err
	}
	defer unlock()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return "", err
	}
	cfg.Console.PasswordHash = hash
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	if err := config.Save(paths.File(config.ConfigFileName), cfg); err != nil {
		return "", err
	}
	return consoleURL(paths, cfg.Console), nil
}

// consoleURL is where the agent serves the console with c, "" while no
// password is set: over HTTPS with the router's certificate, plain HTTP
// only on loopback when there is none (TLS offloaded), as the agent
// decides (supervisor's newConsoleServer).
func consoleURL(paths config.Paths, c config.ConsoleConfig) string {
	if c.PasswordHash == "" {
		return ""
	}
	return c.Endpoint(paths).URL()
}

// hashConsolePassword is the bcrypt hash appliance.yaml keeps of the
// console's password; a password too short or too long is the operator's
// input error.
func hashConsolePassword(password []byte) (string, error) {
	hash, err := console.HashPassword(password)
	if err != nil {
		if errors.Is(err, console.ErrPasswordTooShort) || errors.Is(err, console.ErrPasswordTooLong) {
			return "", &InputError{Input: InputConsolePassword, Err: err}
		}
		return "", err
	}
	return string(hash), nil
}
