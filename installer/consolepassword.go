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
func SetConsolePassword(ctx context.Context, paths config.Paths, password []byte) error {
	paths = paths.WithDefaults()
	hash, err := console.HashPassword(password)
	if err != nil {
		if errors.Is(err, console.ErrPasswordTooShort) || errors.Is(err, console.ErrPasswordTooLong) {
			return &InputError{Input: InputConsolePassword, Err: err}
		}
		return err
	}
	if _, err := loadInstalledConfig(paths); err != nil {
		return err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return err
	}
	defer unlock()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return err
	}
	cfg.Console.PasswordHash = string(hash)
	if err := cfg.Validate(); err != nil {
		return err
	}
	return config.Save(paths.File(config.ConfigFileName), cfg)
}
