package wechat

import "context"

// This file gives the external tests (package wechat_test) access to
// identifiers the package does not export. It is compiled only into tests.

const DefaultEarly = defaultEarly

var (
	IsTokenInvalid        = isTokenInvalid
	IsRefreshTokenInvalid = isRefreshTokenInvalid
	IsUnauthorized        = isUnauthorized
	IsSystemBusy          = isSystemBusy
)

func (a *OAuthApp) Refresh(ctx context.Context, refreshToken string) (*OAuthToken, error) {
	return a.refresh(ctx, refreshToken)
}

func (a *OAuthApp) CheckToken(ctx context.Context, accessToken, openid string) error {
	return a.checkToken(ctx, accessToken, openid)
}
