// Package urls holds what the appliance's HTTP clients share about URLs in
// messages: a URL shown without what may be a secret, and the cause of a
// failed request without the URL net/http already put in front of it.
package urls

import (
	"errors"
	"net/url"
)

// Redact is u without what may be a secret (user info, query, fragment):
// what messages, status and logs say of a URL.
func Redact(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

// Cause is err without net/http's *url.Error wrapping, whose message
// repeats the whole URL (credentials and query included): callers say the
// redacted URL themselves.
func Cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
